package token

import (
	"regexp"
	"testing"
)

func TestNew(t *testing.T) {
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	a, err := New()
	if err != nil {
		t.Fatal(err)
	}
	b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if !hex32.MatchString(a) || !hex32.MatchString(b) {
		t.Fatalf("tokens %q %q: want 32 hex digits", a, b)
	}
	if a == b {
		t.Fatalf("two tokens are equal: %q", a)
	}
}

func TestShort(t *testing.T) {
	if s := Short(3); !regexp.MustCompile(`^[0-9a-f]{6}$`).MatchString(s) {
		t.Fatalf("Short(3) = %q, want 6 hex digits", s)
	}
}
