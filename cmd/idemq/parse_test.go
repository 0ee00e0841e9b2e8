package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseDB(t *testing.T) {
	for _, c := range []struct {
		in, dialect, dsn string
	}{
		{"sqlite:/var/lib/app.db", "sqlite", "/var/lib/app.db"},
		{"sqlite:///var/lib/app.db", "sqlite", "/var/lib/app.db"},
		{"./app.db", "sqlite", "./app.db"},
		{"postgres://u:p@db:5432/app?sslmode=disable", "postgres", "postgres://u:p@db:5432/app?sslmode=disable"},
		{"postgresql://u@db/app", "postgres", "postgresql://u@db/app"},
		{"postgres:host=db user=u dbname=app", "postgres", "host=db user=u dbname=app"},
		{"mysql://u:p@db:3306/app", "mysql", "u:p@tcp(db:3306)/app?parseTime=true"},
		{"mysql://u:p@db/app?loc=UTC", "mysql", "u:p@tcp(db:3306)/app?loc=UTC&parseTime=true"},
		{"mysql://u:p@tcp(db:3306)/app", "mysql", "u:p@tcp(db:3306)/app?parseTime=true"},
		{"mysql:u:p@tcp(db:3306)/app?parseTime=true", "mysql", "u:p@tcp(db:3306)/app?parseTime=true"},
		{"u:p@tcp(db:3306)/app", "mysql", "u:p@tcp(db:3306)/app?parseTime=true"},
	} {
		d, dsn, err := parseDB(c.in)
		if err != nil || d != c.dialect || dsn != c.dsn {
			t.Errorf("parseDB(%q) = %q, %q, %v; want %q, %q", c.in, d, dsn, err, c.dialect, c.dsn)
		}
	}
	for _, bad := range []string{"", "oracle://x"} {
		if _, _, err := parseDB(bad); err == nil {
			t.Errorf("parseDB(%q) accepted", bad)
		}
	}
}

func TestParseTime(t *testing.T) {
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	got, err := parseTime("2026-12-07T10:00:00", tokyo)
	if err != nil || !got.Equal(time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)) {
		t.Fatalf("local time in Tokyo = %v, %v", got, err)
	}
	got, err = parseTime("2h", time.UTC)
	if err != nil || time.Since(got) < 2*time.Hour || time.Since(got) > 2*time.Hour+time.Minute {
		t.Fatalf("2h ago = %v, %v", got, err)
	}
	if _, err := parseTime("yesterday", time.UTC); err == nil {
		t.Fatal("nonsense accepted")
	}
}

func TestShowBody(t *testing.T) {
	if got := showBody([]byte(`{"a":1}`)); got != `{"a":1}` {
		t.Errorf("text body = %q", got)
	}
	got := showBody([]byte{0xff, 0x00, 'a'})
	if !strings.Contains(got, "ff 00 61") {
		t.Errorf("binary body = %q", got)
	}
	if got := showBody([]byte("\x1b[31mred")); strings.Contains(got, "\x1b") {
		t.Errorf("terminal escape printed raw: %q", got)
	}
	if got := cut("a\nb\x1bc", 10); strings.ContainsAny(got, "\n") {
		t.Errorf("cut kept a newline: %q", got)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", 42 * time.Second: "42s", 250 * time.Second: "4m10s",
		125 * time.Minute: "2h5m", 76 * time.Hour: "3d4h"} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestTerminalSafe(t *testing.T) {
	var b strings.Builder
	if _, err := (terminalSafe{&b}).Write([]byte("reason: \x1b[2Jwiped\x07\u009b\n\tnext")); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "reason: ?[2Jwiped??\n\tnext" {
		t.Fatalf("got %q", got)
	}
}
