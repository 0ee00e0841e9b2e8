package dedup

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestInfrastructureKinds(t *testing.T) {
	cause := fmt.Errorf("dial tcp: %w", io.ErrUnexpectedEOF)
	u := Unavailable(cause)
	if !errors.Is(u, ErrUnavailable) || !errors.Is(u, io.ErrUnexpectedEOF) || errors.Is(u, ErrConflict) {
		t.Fatalf("Unavailable(%v) = %v: wrong kinds", cause, u)
	}
	c := Conflict(cause)
	if !errors.Is(c, ErrConflict) || !errors.Is(c, io.ErrUnexpectedEOF) || errors.Is(c, ErrUnavailable) {
		t.Fatalf("Conflict(%v) = %v: wrong kinds", cause, c)
	}
	if !IsInfrastructure(u) || !IsInfrastructure(fmt.Errorf("wrapped: %w", c)) {
		t.Fatal("IsInfrastructure missed a wrapped kind")
	}
	if IsInfrastructure(cause) || IsInfrastructure(nil) {
		t.Fatal("IsInfrastructure claimed a plain error")
	}
	if Unavailable(nil) != nil || Conflict(nil) != nil {
		t.Fatal("wrapping nil must give nil")
	}
	if Unavailable(u) != u {
		t.Fatal("wrapping twice must not nest")
	}
	if got, want := u.Error(), "dedup: store unavailable: dial tcp: unexpected EOF"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
