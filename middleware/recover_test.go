package middleware

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/idemq/idemq"
)

func TestRecover(t *testing.T) {
	tests := []struct {
		name  string
		panic any
	}{
		{"string", "kaboom"},
		{"error", errBoom},
		{"permanent error", idemq.Permanent(errBoom)},
		{"nil", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
				panic(tc.panic)
			}), Recover())
			err := h.Handle(context.Background(), testMessage())
			var pe *PanicError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *PanicError", err)
			}
			if tc.panic != nil && pe.Value != tc.panic {
				t.Errorf("Value = %v, want %v", pe.Value, tc.panic)
			}
			if !strings.Contains(string(pe.Stack), "recover_test.go") {
				t.Errorf("stack does not show the panicking handler:\n%s", pe.Stack)
			}
			if idemq.IsPermanent(err) {
				t.Error("a panic must be retryable, got a permanent error")
			}
			if !strings.Contains(err.Error(), "panicked") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestRecoverPassesResults(t *testing.T) {
	for _, want := range []error{nil, errBoom} {
		h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return want }), Recover())
		if got := h.Handle(context.Background(), testMessage()); got != want {
			t.Errorf("Handle = %v, want %v", got, want)
		}
	}
}
