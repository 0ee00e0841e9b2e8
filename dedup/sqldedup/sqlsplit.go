package sqldedup

import "strings"

// splitStatements splits q into the statements a server would run one
// after another when it accepts several in one query (PostgreSQL's simple
// protocol, SQLite, MySQL/MariaDB with multiStatements=true), at the
// semicolons that stand outside string literals, quoted identifiers and
// comments, as dialect ("postgres", "mysql" or "sqlite") reads them. Empty
// statements are dropped. A query that ends inside a literal or a comment
// is returned whole: the server rejects it anyway.
//
// The quoting rules followed are:
//   - '...' with the quote doubled inside; on MySQL a backslash escapes
//     the next character, on PostgreSQL only in E'...' strings;
//   - "..." (an identifier, or a string on MySQL) and, on MySQL and
//     SQLite, `...`, each with its quote doubled inside; on SQLite [...];
//   - PostgreSQL's dollar quotes, $$...$$ and $tag$...$tag$;
//   - -- comments to the end of the line, # comments on MySQL, and /* */
//     comments (nested on PostgreSQL).
func splitStatements(q, dialect string) []string {
	var (
		out   []string
		start int
	)
	mysql, pg := dialect == "mysql", dialect == "postgres"
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == ';':
			if s := strings.TrimSpace(q[start:i]); s != "" {
				out = append(out, s)
			}
			start = i + 1
		case c == '\'':
			backslash := mysql || (pg && i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i < 2 || !isIdentByte(q[i-2])))
			end := closeQuote(q, i+1, '\'', backslash)
			if end < 0 {
				return []string{strings.TrimSpace(q)}
			}
			i = end
		case c == '"' || (c == '`' && !pg):
			end := closeQuote(q, i+1, c, mysql && c == '"')
			if end < 0 {
				return []string{strings.TrimSpace(q)}
			}
			i = end
		case c == '[' && dialect == "sqlite":
			end := strings.IndexByte(q[i+1:], ']')
			if end < 0 {
				return []string{strings.TrimSpace(q)}
			}
			i += 1 + end
		case c == '-' && i+1 < len(q) && q[i+1] == '-', c == '#' && mysql:
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				i = len(q)
				break
			}
			i += end
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := closeComment(q, i+2, pg)
			if end < 0 {
				return []string{strings.TrimSpace(q)}
			}
			i = end
		case c == '$' && pg && (i == 0 || !isIdentByte(q[i-1])):
			tag, ok := dollarTag(q[i:])
			if !ok {
				continue
			}
			end := strings.Index(q[i+len(tag):], tag)
			if end < 0 {
				return []string{strings.TrimSpace(q)}
			}
			i += len(tag) + end + len(tag) - 1
		}
	}
	if s := strings.TrimSpace(q[start:]); s != "" {
		out = append(out, s)
	}
	return out
}

// closeQuote returns the index of the quote that closes a literal opened
// by quote just before from, or -1. A doubled quote stands for itself;
// with backslash, a backslash escapes the next byte.
func closeQuote(q string, from int, quote byte, backslash bool) int {
	for i := from; i < len(q); i++ {
		switch q[i] {
		case '\\':
			if backslash {
				i++
			}
		case quote:
			if i+1 < len(q) && q[i+1] == quote {
				i++
				continue
			}
			return i
		}
	}
	return -1
}

// closeComment returns the index of the '/' that ends a /* comment whose
// text starts at from, or -1; nested comments count where nested is set.
func closeComment(q string, from int, nested bool) int {
	depth := 1
	for i := from; i+1 < len(q); i++ {
		switch {
		case q[i] == '*' && q[i+1] == '/':
			depth--
			i++
			if depth == 0 {
				return i
			}
		case nested && q[i] == '/' && q[i+1] == '*':
			depth++
			i++
		}
	}
	return -1
}

// dollarTag returns the dollar-quote opener ($$ or $tag$) at the start of
// s, if there is one.
func dollarTag(s string) (string, bool) {
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			return s[:i+1], true
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80 || (i > 1 && c >= '0' && c <= '9'):
		default:
			return "", false
		}
	}
	return "", false
}

// isIdentByte reports whether c may be part of an unquoted identifier, a
// number or a parameter such as $1.
func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80
}
