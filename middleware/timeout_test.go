package middleware

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
)

func TestTimeoutRejectsNonPositive(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := Timeout(d, nil); !errors.Is(err, ErrInvalidTimeout) {
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
	}), must(Timeout(time.Hour, nil)))
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
	}), must(Timeout(time.Millisecond, nil)))
	if err := h.Handle(context.Background(), testMessage()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

// The error of a handler cut short names the timeout, and still matches
// context.DeadlineExceeded; a handler still running at half the timeout is
// reported once, with its message.
func TestTimeoutNamesItselfAndWarnsSlowHandler(t *testing.T) {
	logs := &logRecorder{}
	const d = 80 * time.Millisecond
	h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
		<-ctx.Done()
		return ctx.Err()
	}), must(Timeout(d, slog.New(logs))))
	msg := testMessage()
	err := h.Handle(context.Background(), msg)
	if err == nil || !strings.HasPrefix(err.Error(), "handler timed out after 80ms") ||
		!errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrHandlerTimeout) {
		t.Fatalf("err = %v, want \"handler timed out after 80ms\" matching DeadlineExceeded and ErrHandlerTimeout", err)
	}
	recs := logs.all()
	if len(recs) != 1 || recs[0].Level != slog.LevelWarn || !strings.Contains(recs[0].Message, "slow handler") {
		t.Fatalf("logs = %v, want one slow-handler warning", recs)
	}
	a := attrs(recs[0])
	if a["message_id"].String() != msg.ID || a["topic"].String() != msg.Topic || a["key"].String() != msg.DedupKey() {
		t.Errorf("warning attrs = %v, want the message's ID, key and topic", a)
	}

	// A handler that finishes in time is neither warned about nor renamed.
	logs2 := &logRecorder{}
	boom := errors.New("boom")
	h = chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return boom }), must(Timeout(time.Hour, slog.New(logs2))))
	if err := h.Handle(context.Background(), testMessage()); err != boom {
		t.Fatalf("err = %v, want the handler's own", err)
	}
	if n := len(logs2.all()); n != 0 {
		t.Fatalf("%d log lines for a fast handler", n)
	}
}
