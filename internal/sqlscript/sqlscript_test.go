package sqlscript

import (
	"reflect"
	"testing"
)

func TestSplit(t *testing.T) {
	script := `-- header comment
CREATE TABLE a (
  id INT NOT NULL, -- trailing comment
  v  TEXT
);

-- between
CREATE INDEX a_v ON a (v);   
INSERT INTO a VALUES (1, 'x')`
	want := []string{
		"CREATE TABLE a (\n  id INT NOT NULL,\n  v  TEXT\n)",
		"CREATE INDEX a_v ON a (v)",
		"INSERT INTO a VALUES (1, 'x')",
	}
	if got := Split(script); !reflect.DeepEqual(got, want) {
		t.Fatalf("Split =\n%q\nwant\n%q", got, want)
	}
	if got := Split("-- only a comment\n\n"); len(got) != 0 {
		t.Fatalf("Split of comments = %q, want none", got)
	}
}

func TestNumbered(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT pg_advisory_lock(?)", "SELECT pg_advisory_lock($1)"},
		{"INSERT INTO t (a, b, c) VALUES (?, ?, 2, ?) ON CONFLICT (a) DO NOTHING", "INSERT INTO t (a, b, c) VALUES ($1, $2, 2, $3) ON CONFLICT (a) DO NOTHING"},
		{"SELECT '?', \"a?b\", ? FROM t WHERE x = 'it''s ?' AND y = ?", "SELECT '?', \"a?b\", $1 FROM t WHERE x = 'it''s ?' AND y = $2"},
		{"UPDATE w SET v = v + 1 WHERE id = ?", "UPDATE w SET v = v + 1 WHERE id = $1"},
	} {
		if got := Numbered(c.in); got != c.want {
			t.Errorf("Numbered(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
