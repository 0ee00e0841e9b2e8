// Package sqlscript splits the SQL files idemq ships (one per dialect and
// package) into single statements, for drivers that run one statement per
// call, and numbers the placeholders of a query for the few paths that
// reach the PostgreSQL driver without gorm.
//
// idemq writes every bind placeholder of the SQL it builds as "?", on
// every dialect: gorm rewrites "?" for PostgreSQL itself. A statement that
// goes straight to the driver (a pgx batch, a database/sql connection
// held for a session lock) is still written with "?" and passed through
// [Numbered], so that one query text serves every path.
package sqlscript

import (
	"strconv"
	"strings"
)

// Split returns the statements of script, without comments and without
// their terminating semicolons. A comment runs from "--" to the end of the
// line; a statement ends at a ";" that ends a line. The shipped files keep
// to this form: no "--" or ";" inside string literals, no statement that
// continues after a ";" on the same line.
func Split(script string) []string {
	var (
		out []string
		cur strings.Builder
	)
	for _, line := range strings.Split(script, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimRight(line, " \t\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(line, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Numbered returns query with each "?" placeholder replaced by $1, $2, ...
// in order, the form the PostgreSQL driver takes. A "?" inside a
// single-quoted string literal or a double-quoted identifier is left as it
// is.
func Numbered(query string) string {
	var (
		b     strings.Builder
		n     int
		quote byte // the quote character we are inside, or 0
	)
	b.Grow(len(query) + 8)
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote closes and reopens: same result
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
