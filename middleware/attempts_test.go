package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func TestAttemptsRecordsFailures(t *testing.T) {
	ledger := newFakeLedger()
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return errBoom }),
		must(Attempts(ledger, AttemptsConfig{})))
	for i := 1; i <= 3; i++ {
		msg := testMessage()
		msg.Attempt = i
		if err := h.Handle(context.Background(), msg); !errors.Is(err, errBoom) {
			t.Fatalf("attempt %d: err = %v", i, err)
		}
		if msg.Attempt != i {
			t.Errorf("attempt %d: msg.Attempt = %d", i, msg.Attempt)
		}
	}
	rec := ledger.records["g1\x001234567890"]
	if rec == nil || rec.Count != 3 || len(rec.History) != 3 || rec.LastError != "boom" {
		t.Fatalf("record = %+v", rec)
	}
}

func TestAttemptsRaisesAttemptToRecordedCount(t *testing.T) {
	ledger := newFakeLedger()
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return errBoom }),
		must(Attempts(ledger, AttemptsConfig{})))
	// Five failed deliveries, then the message is re-sent and the transport
	// starts counting from 1 again.
	for range 5 {
		_ = h.Handle(context.Background(), testMessage())
	}
	msg := testMessage()
	_ = h.Handle(context.Background(), msg)
	if msg.Attempt != 6 {
		t.Fatalf("msg.Attempt = %d after the sixth failure, want 6", msg.Attempt)
	}
}

func TestAttemptsSkips(t *testing.T) {
	tests := []struct {
		name string
		err  error
		ctx  func() context.Context
		edit func(*idemq.Message)
	}{
		{name: "busy", err: idemq.RetryAfter(time.Second, dedup.ErrBusy)},
		{name: "shutdown", err: context.Canceled, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
		{name: "shutdown with other error", err: errBoom, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
		{name: "no key", err: idemq.Permanent(ErrNoDedupKey), edit: func(m *idemq.Message) { m.ID = "" }},
		{name: "no group", err: errBoom, edit: func(m *idemq.Message) { m.Group = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ledger := newFakeLedger()
			h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return tc.err }),
				must(Attempts(ledger, AttemptsConfig{})))
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			msg := testMessage()
			if tc.edit != nil {
				tc.edit(msg)
			}
			if err := h.Handle(ctx, msg); err != tc.err {
				t.Fatalf("err = %v, want %v unchanged", err, tc.err)
			}
			if n := ledger.callCount(); n != 0 {
				t.Errorf("ledger called %d times", n)
			}
		})
	}
}

func TestAttemptsRecordsInnerTimeout(t *testing.T) {
	ledger := newFakeLedger()
	h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
		<-ctx.Done()
		return ctx.Err()
	}), must(Attempts(ledger, AttemptsConfig{})), must(Timeout(time.Millisecond, nil)))
	if err := h.Handle(context.Background(), testMessage()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if len(ledger.recordArgs) != 1 {
		t.Fatalf("a timed-out handler is a failed attempt: %d records", len(ledger.recordArgs))
	}
}

func TestAttemptsRecordFailureJoinsErrors(t *testing.T) {
	ledger := newFakeLedger()
	ledger.recordErr = errors.New("ledger down")
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return errBoom }),
		must(Attempts(ledger, AttemptsConfig{})))
	err := h.Handle(context.Background(), testMessage())
	if !errors.Is(err, errBoom) || !errors.Is(err, ledger.recordErr) {
		t.Fatalf("err = %v, want both the handler's and the ledger's error", err)
	}
	if idemq.IsPermanent(err) {
		t.Error("a failed recording must stay retryable")
	}
}

func TestAttemptsSuccess(t *testing.T) {
	tests := []struct {
		attempt    int
		clearErr   error
		wantClears int
		wantWarn   bool
	}{
		{attempt: 1, wantClears: 0},
		{attempt: 2, wantClears: 1},
		{attempt: 7, wantClears: 1},
		{attempt: 3, clearErr: errors.New("ledger down"), wantClears: 1, wantWarn: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.attempt, tc.clearErr), func(t *testing.T) {
			ledger := newFakeLedger()
			ledger.clearErr = tc.clearErr
			logs := &logRecorder{}
			h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }),
				must(Attempts(ledger, AttemptsConfig{Logger: slog.New(logs)})))
			msg := testMessage()
			msg.Attempt = tc.attempt
			if err := h.Handle(context.Background(), msg); err != nil {
				t.Fatalf("a failed ClearAttempts must not fail the delivery: %v", err)
			}
			if ledger.clears != tc.wantClears || ledger.callCount() != tc.wantClears {
				t.Errorf("clears = %d, calls = %d, want %d", ledger.clears, ledger.callCount(), tc.wantClears)
			}
			if warned := len(logs.all()) == 1; warned != tc.wantWarn {
				t.Errorf("warned = %v, want %v", warned, tc.wantWarn)
			}
		})
	}
}

func TestAttemptsNilLedger(t *testing.T) {
	if _, err := Attempts(nil, AttemptsConfig{}); !errors.Is(err, ErrNilLedger) {
		t.Fatalf("err = %v", err)
	}
}
