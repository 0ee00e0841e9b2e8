// Package sqlscript splits the SQL files idemq ships (one per dialect and
// package) into single statements, for drivers that run one statement per
// call.
package sqlscript

import "strings"

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
