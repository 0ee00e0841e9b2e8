package sqldedup

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		dialect, q string
		want       []string
	}{
		{"postgres", "UPDATE t SET a = 1", []string{"UPDATE t SET a = 1"}},
		{"postgres", "UPDATE t SET a = 1; COMMIT", []string{"UPDATE t SET a = 1", "COMMIT"}},
		{"postgres", " UPDATE t SET a = 1 ;; ", []string{"UPDATE t SET a = 1"}},
		{"postgres", "INSERT INTO t VALUES ('a;b'); COMMIT", []string{"INSERT INTO t VALUES ('a;b')", "COMMIT"}},
		{"postgres", "INSERT INTO t VALUES ('it''s; fine')", []string{"INSERT INTO t VALUES ('it''s; fine')"}},
		// A backslash is an ordinary character in a PostgreSQL string...
		{"postgres", `INSERT INTO t VALUES ('a\'); COMMIT; --')`, []string{`INSERT INTO t VALUES ('a\')`, "COMMIT", "--')"}},
		// ...but escapes in an E'' string, and on MySQL.
		{"postgres", `INSERT INTO t VALUES (E'a\'; COMMIT')`, []string{`INSERT INTO t VALUES (E'a\'; COMMIT')`}},
		{"mysql", `INSERT INTO t VALUES ('a\'; COMMIT')`, []string{`INSERT INTO t VALUES ('a\'; COMMIT')`}},
		{"mysql", `INSERT INTO t VALUES ("a;b"); COMMIT`, []string{`INSERT INTO t VALUES ("a;b")`, "COMMIT"}},
		{"mysql", "UPDATE `a;b` SET x = 1; COMMIT", []string{"UPDATE `a;b` SET x = 1", "COMMIT"}},
		{"postgres", `UPDATE "a;b" SET x = 1; COMMIT`, []string{`UPDATE "a;b" SET x = 1`, "COMMIT"}},
		{"sqlite", "UPDATE [a;b] SET x = 1; COMMIT", []string{"UPDATE [a;b] SET x = 1", "COMMIT"}},
		{"postgres", "SELECT 1 -- ; COMMIT\n; COMMIT", []string{"SELECT 1 -- ; COMMIT", "COMMIT"}},
		{"mysql", "SELECT 1 # ; COMMIT\n; COMMIT", []string{"SELECT 1 # ; COMMIT", "COMMIT"}},
		{"postgres", "SELECT 1 # 2; COMMIT", []string{"SELECT 1 # 2", "COMMIT"}},
		{"postgres", "SELECT /* ; /* ; */ ; */ 1; COMMIT", []string{"SELECT /* ; /* ; */ ; */ 1", "COMMIT"}},
		{"mysql", "SELECT /* ; */ 1; COMMIT", []string{"SELECT /* ; */ 1", "COMMIT"}},
		{"postgres", "SELECT $$a;b$$; COMMIT", []string{"SELECT $$a;b$$", "COMMIT"}},
		{"postgres", "SELECT $x$a;$$;b$x$; COMMIT", []string{"SELECT $x$a;$$;b$x$", "COMMIT"}},
		{"postgres", "SELECT $1; COMMIT", []string{"SELECT $1", "COMMIT"}},
		// Unterminated: one statement, the server's to reject.
		{"postgres", "SELECT 'a; COMMIT", []string{"SELECT 'a; COMMIT"}},
		{"postgres", "SELECT /* a; COMMIT", []string{"SELECT /* a; COMMIT"}},
	}
	for _, tc := range tests {
		if got := splitStatements(tc.q, tc.dialect); !slices.Equal(got, tc.want) {
			t.Errorf("%s: split(%q) = %q, want %q", tc.dialect, tc.q, got, tc.want)
		}
	}
}

// FuzzSplitStatements checks that splitting never panics, never invents
// text, and that a query without a semicolon stays one statement.
func FuzzSplitStatements(f *testing.F) {
	for _, s := range []string{"UPDATE t SET a = 1; COMMIT", "SELECT $$;$$", `SELECT E'\'';`, "SELECT /* /* */ */;", "SELECT [a;b]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		for _, d := range []string{"postgres", "mysql", "sqlite"} {
			parts := splitStatements(q, d)
			for _, p := range parts {
				if p == "" || !strings.Contains(q, p) {
					t.Fatalf("%s: part %q of %q is empty or not in the query", d, p, q)
				}
			}
			if !strings.Contains(q, ";") && strings.TrimSpace(q) != "" && (len(parts) != 1 || parts[0] != strings.TrimSpace(q)) {
				t.Fatalf("%s: %q without a semicolon split into %q", d, q, parts)
			}
		}
	})
}
