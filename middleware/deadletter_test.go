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
			h := chain(t, failing(tc.err), must(DeadLetter(ledger, DeadLetterConfig{MaxAttempts: tc.max, Logger: slog.New(&logRecorder{})})))
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
		must(DeadLetter(ledger, DeadLetterConfig{MaxAttempts: 3, Logger: slog.New(&logRecorder{})})),
		must(Attempts(ledger, AttemptsConfig{})))
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
	h := chain(t, failing(idemq.Permanent(errBoom)), must(DeadLetter(ledger, DeadLetterConfig{Logger: slog.New(&logRecorder{})})))
	if err := h.Handle(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	dl := ledger.buried[0]
	if len(dl.History) != 1 || dl.History[0].Error != "permanent: boom" || dl.Attempts != 1 {
		t.Fatalf("dead letter = %+v", dl)
	}
}

// A message whose group or key cannot be stored is buried under a name
// derived from a SHA-256 of what it holds: the same for every copy of it,
// different for different messages, valid for the ledger, and said in the
// reason.
func TestDeadLetterUnusableKeyIsHashed(t *testing.T) {
	tests := []struct {
		name, group, id, key string
	}{
		{"key too long", "g1", "42", strings.Repeat("k", 10<<10)},
		{"no key and no ID", "g1", "", ""},
		{"NUL in ID", "g1", "4\x002", ""},
		{"invalid UTF-8 key", "g1", "42", "k\xff"},
		{"empty group", "", "42", ""},
		{"NUL in group", "g\x001", "42", ""},
	}
	seen := map[string]string{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ledger := newFakeLedger()
			h := chain(t, failing(idemq.Permanent(ErrNoDedupKey)), must(DeadLetter(ledger, DeadLetterConfig{Logger: slog.New(&logRecorder{})})))
			for range 2 {
				msg := testMessage()
				msg.Group, msg.ID, msg.Key = tc.group, tc.id, tc.key
				if err := h.Handle(context.Background(), msg); err != nil {
					t.Fatal(err)
				}
			}
			a, b := ledger.buried[0], ledger.buried[1]
			if a.Key != b.Key || a.Group != b.Group {
				t.Fatalf("two copies buried under %q/%q and %q/%q", a.Group, a.Key, b.Group, b.Key)
			}
			if !strings.HasPrefix(a.Key, "unusable-key:sha256:") {
				t.Errorf("key = %q, want unusable-key:sha256:<hex>", a.Key)
			}
			if err := (dedup.Request{Group: a.Group, Key: a.Key}).Validate(); err != nil {
				t.Errorf("burial name unusable: %v", err)
			}
			if !strings.Contains(a.Reason, a.Key) || !strings.Contains(a.Reason, "SHA-256") || !strings.HasSuffix(a.Reason, "permanent: "+ErrNoDedupKey.Error()) {
				t.Errorf("reason %q does not say how the message was named", a.Reason)
			}
			if other, dup := seen[a.Group+"/"+a.Key]; dup {
				t.Errorf("same burial name as %q", other)
			}
			seen[a.Group+"/"+a.Key] = tc.name
		})
	}
}

// Infrastructure failures (the store unreachable, a conflict it gave up
// on) are not the handler's: they are neither counted as attempts nor
// buried, even at MaxAttempts or when marked permanent by a wrapper.
func TestInfrastructureFailureIsNotAnAttempt(t *testing.T) {
	for _, cause := range []error{
		dedup.Unavailable(errors.New("dial tcp: connection refused")),
		dedup.Conflict(errors.New("Error 1213: Deadlock found")),
		idemq.Permanent(dedup.Unavailable(errors.New("connection reset"))),
	} {
		t.Run(cause.Error(), func(t *testing.T) {
			ledger := newFakeLedger()
			store := &scriptedStore{err: cause}
			h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }),
				must(DeadLetter(ledger, DeadLetterConfig{MaxAttempts: 2, Logger: slog.New(&logRecorder{})})),
				must(Attempts(ledger, AttemptsConfig{})),
				must(Dedup(store, DedupConfig{})))
			for attempt := 1; attempt <= 3; attempt++ {
				msg := testMessage()
				msg.Attempt = attempt
				err := h.Handle(context.Background(), msg)
				if !errors.Is(err, cause) || !dedup.IsInfrastructure(err) {
					t.Fatalf("attempt %d: err = %v, want the infrastructure failure back", attempt, err)
				}
			}
			if ledger.callCount() != 0 {
				t.Fatalf("ledger called %d times (records %v, buried %d) for infrastructure failures",
					ledger.callCount(), ledger.recordArgs, len(ledger.buried))
			}
		})
	}
}

func TestDeadLetterBuryFailureIsRetryable(t *testing.T) {
	ledger := newFakeLedger()
	ledger.buryErr = errors.New("database down")
	logs := &logRecorder{}
	h := chain(t, failing(idemq.Permanent(errBoom)), must(DeadLetter(ledger, DeadLetterConfig{Logger: slog.New(logs)})))
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
	h := chain(t, failing(idemq.Permanent(errBoom)), must(DeadLetter(ledger, DeadLetterConfig{})))
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
	if _, err := DeadLetter(nil, DeadLetterConfig{}); !errors.Is(err, ErrNilLedger) {
		t.Errorf("nil ledger: %v", err)
	}
	if _, err := DeadLetter(newFakeLedger(), DeadLetterConfig{MaxAttempts: -1}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("negative MaxAttempts: %v", err)
	}
}
