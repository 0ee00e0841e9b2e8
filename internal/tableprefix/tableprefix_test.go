package tableprefix

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   bool
	}{
		{"idemq_", true},
		{"a", true},
		{"a" + strings.Repeat("b", 30), true},
		{"a" + strings.Repeat("b", 31), false},
		{"", false},
		{"_x", false},
		{"1x", false},
		{"Idemq_", false},
		{"idemq-", false},
		{"idemq_; DROP", false},
	} {
		if got := Valid(tc.prefix); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
}
