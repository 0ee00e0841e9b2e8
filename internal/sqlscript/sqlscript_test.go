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
