// Package tableprefix holds the one rule every idemq table prefix obeys:
// a lower-case letter, then up to 30 lower-case letters, digits or
// underscores, so that a prefix can be put into SQL unquoted and every
// table name stays within the shortest identifier limit of the databases
// idemq supports. Packages keep their own exported errors and delegate the
// check here.
package tableprefix

import "regexp"

// Pattern is the regular expression a table prefix must match.
const Pattern = `^[a-z][a-z0-9_]{0,30}$`

var re = regexp.MustCompile(Pattern)

// Valid reports whether prefix matches Pattern.
func Valid(prefix string) bool { return re.MatchString(prefix) }
