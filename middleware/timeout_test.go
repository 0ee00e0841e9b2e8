package middleware

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemq/idemq"
)

func TestTimeoutRejectsNonPositive(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := Timeout(d); !errors.Is(err, ErrInvalidTimeout) {
			t.Errorf("Timeout(%s) err = %v, want ErrInvalidTimeout", d, err)
		}
	}
}

func TestTimeoutSetsDeadline(t *testing.T) {
	var deadline time.Time
	var ok bool
	h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
		deadline, ok = ctx.Deadline()
		return nil
	}), must(Timeout(time.Hour)))
	before := time.Now()
	if err := h.Handle(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("handler context has no deadline")
	}
	if deadline.Before(before.Add(time.Hour)) || deadline.After(time.Now().Add(time.Hour)) {
		t.Errorf("deadline %v not one hour after the delivery started (%v)", deadline, before)
	}
}

func TestTimeoutCancelsHandlerContext(t *testing.T) {
	h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
		<-ctx.Done()
		return ctx.Err()
	}), must(Timeout(time.Millisecond)))
	if err := h.Handle(context.Background(), testMessage()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}
