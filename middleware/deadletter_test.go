package middleware

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// failing returns a handler that always fails with err.
func failing(err error) idemq.Handler {
	return idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return err })
}

func TestDeadLetterDecisions(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		attempt  int
		max      int
		wantDead bool
	}{
		{name: "retryable below max", err: errBoom, attempt: 3, max: 5},
		{name: "retryable at max", err: errBoom, attempt: 5, max: 5, wantDead: true},
		{name: "retryable above max", err: errBoom, attempt: 9, max: 5, wantDead: true},
		{name: "default max", err: errBoom, attempt: DefaultMaxAttempts, wantDead: true},
		{name: "below default max", err: errBoom, attempt: DefaultMaxAttempts - 1},
		{name: "permanent first attempt", err: idemq.Permanent(errBoom), attempt: 1, max: 5, wantDead: true},
		{name: "busy never", err: idemq.RetryAfter(time.Second, dedup.ErrBusy), attempt: 50, max: 5},
		{name: "permanent busy never", err: idemq.Permanent(dedup.ErrBusy), attempt: 1, max: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ledger := newFakeLedger()
			h := chain(t, failing(tc.err), must(DeadLetter(ledger, DeadLetterOptions{MaxAttempts: tc.max, Logger: slog.New(&logRecorder{})})))
			msg := testMessage()
			msg.Attempt = tc.attempt
			err := h.Handle(context.Background(), msg)
			if tc.wantDead {
				if err != nil {
					t.Fatalf("a buried message must be acknowledged, got %v", err)
				}
				if len(ledger.buried) != 1 {
					t.Fatalf("%d dead letters, want 1", len(ledger.buried))
				}
				return
			}
			if err != tc.err {
				t.Fatalf("err = %v, want %v unchanged", err, tc.err)
			}
			if len(ledger.buried) != 0 {
				t.Fatalf("buried %+v", ledger.buried)
			}
		})
	}
}

func TestDeadLetterKeepsWholeMessageAndHistory(t *testing.T) {
	ledger := newFakeLedger()
	calls := 0
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
		calls++
		return errors.New("failure " + strings.Repeat("!", calls))
	}),
		must(DeadLetter(ledger, DeadLetterOptions{MaxAttempts: 3, Logger: slog.New(&logRecorder{})})),
		must(Attempts(ledger, AttemptsOptions{})))
	for i := 1; i <= 3; i++ {
		msg := testMessage()
		msg.Key = "order:7"
		msg.Attempt = i
		err := h.Handle(context.Background(), msg)
		if i < 3 && err == nil {
			t.Fatalf("attempt %d acknowledged", i)
		}
		if i == 3 && err != nil {
			t.Fatalf("attempt 3: %v", err)
		}
	}
	if len(ledger.buried) != 1 {
		t.Fatalf("%d dead letters", len(ledger.buried))
	}
	dl := ledger.buried[0]
	msg := testMessage()
	want := dedup.DeadLetter{
		ID: 1, Group: "g1", Key: "order:7", MessageID: msg.ID, Topic: msg.Topic, Tags: msg.Tags,
		Keys: msg.Keys, Body: msg.Body, Properties: msg.Properties, Attempts: 3, Reason: "failure !!!",
	}
	got := dl
	got.History, got.FirstFailedAt, got.DeadAt = nil, time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dead letter =\n%+v\nwant\n%+v", got, want)
	}
	var hist []string
	for _, h := range dl.History {
		hist = append(hist, h.Error)
	}
	if !reflect.DeepEqual(hist, []string{"failure !", "failure !!", "failure !!!"}) {
		t.Errorf("history = %q", hist)
	}
	if first := ledger.records["g1\x00order:7"]; first == nil || !dl.FirstFailedAt.Equal(first.FirstAt) {
		t.Errorf("FirstFailedAt = %v, want the first recorded failure", dl.FirstFailedAt)
	}
}

func TestDeadLetterWithoutAttemptsHasFinalError(t *testing.T) {
	ledger := newFakeLedger()
	h := chain(t, failing(idemq.Permanent(errBoom)), must(DeadLetter(ledger, DeadLetterOptions{Logger: slog.New(&logRecorder{})})))
	if err := h.Handle(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	dl := ledger.buried[0]
	if len(dl.History) != 1 || dl.History[0].Error != "permanent: boom" || dl.Attempts != 1 {
		t.Fatalf("dead letter = %+v", dl)
	}
}

func TestDeadLetterUnusableKeyFallsBack(t *testing.T) {
	tests := []struct {
		name, id, key, want string
	}{
		{"bad key uses message ID", "42", strings.Repeat("k", 300), "42"},
		{"no ID uses body hash", "", "", "body-sha256:" + dedup.Fingerprint([]byte(`{"order":7}`))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ledger := newFakeLedger()
			h := chain(t, failing(idemq.Permanent(ErrNoDedupKey)), must(DeadLetter(ledger, DeadLetterOptions{Logger: slog.New(&logRecorder{})})))
			msg := testMessage()
			msg.ID, msg.Key = tc.id, tc.key
			if err := h.Handle(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
			if got := ledger.buried[0].Key; got != tc.want {
				t.Errorf("key = %q, want %q", got, tc.want)
			}
			if err := idemq.ValidateKey(ledger.buried[0].Key); err != nil {
				t.Errorf("fallback key invalid: %v", err)
			}
		})
	}
}

func TestDeadLetterBuryFailureIsRetryable(t *testing.T) {
	ledger := newFakeLedger()
	ledger.buryErr = errors.New("database down")
	logs := &logRecorder{}
	h := chain(t, failing(idemq.Permanent(errBoom)), must(DeadLetter(ledger, DeadLetterOptions{Logger: slog.New(logs)})))
	err := h.Handle(context.Background(), testMessage())
	if !errors.Is(err, ErrDeadLetterFailed) || !errors.Is(err, ledger.buryErr) {
		t.Fatalf("err = %v", err)
	}
	if idemq.IsPermanent(err) {
		t.Fatal("a failed burial must be retried, not treated as permanent")
	}
	if !strings.Contains(err.Error(), "boom") {
		t.Errorf("error %q does not name the handler's failure", err)
	}
	if r := logs.all(); len(r) != 1 || r[0].Level != slog.LevelError {
		t.Errorf("want one Error log line, got %d", len(r))
	}
}

func TestDeadLetterSkipsOnShutdown(t *testing.T) {
	ledger := newFakeLedger()
	h := chain(t, failing(idemq.Permanent(errBoom)), must(DeadLetter(ledger, DeadLetterOptions{})))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Handle(ctx, testMessage()); !idemq.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
	if ledger.callCount() != 0 {
		t.Fatal("buried during shutdown")
	}
}

func TestDeadLetterConfig(t *testing.T) {
	if _, err := DeadLetter(nil, DeadLetterOptions{}); !errors.Is(err, ErrNilLedger) {
		t.Errorf("nil ledger: %v", err)
	}
	if _, err := DeadLetter(newFakeLedger(), DeadLetterOptions{MaxAttempts: -1}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("negative MaxAttempts: %v", err)
	}
}
