package middleware

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func TestDedupOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		res        dedup.Result
		storeErr   error
		handlerErr error
		policy     MismatchPolicy
		wantCalled bool
		wantErr    func(error) bool
		wantDelay  time.Duration // for busy
		wantWarn   bool
	}{
		{name: "processed", res: dedup.Result{Outcome: dedup.Processed}, wantCalled: true, wantErr: isNil},
		{name: "handler error passes unchanged", res: dedup.Result{Outcome: dedup.Processed}, handlerErr: errBoom, wantCalled: true,
			wantErr: func(err error) bool { return err == errBoom }},
		{name: "permanent handler error survives", res: dedup.Result{Outcome: dedup.Processed}, handlerErr: idemq.Permanent(errBoom), wantCalled: true,
			wantErr: idemq.IsPermanent},
		{name: "store error", storeErr: errBoom, wantErr: func(err error) bool { return err == errBoom }},
		{name: "duplicate acks", res: dedup.Result{Outcome: dedup.Duplicate}, wantErr: isNil},
		{name: "dead duplicate acks", res: dedup.Result{Outcome: dedup.Duplicate, Dead: true}, wantErr: isNil},
		{name: "busy with long lease", res: dedup.Result{Outcome: dedup.Busy, RetryAfter: 20 * time.Second},
			wantErr: isBusy, wantDelay: 20 * time.Second},
		{name: "busy with short lease gets floor", res: dedup.Result{Outcome: dedup.Busy, RetryAfter: time.Millisecond},
			wantErr: isBusy, wantDelay: DefaultMinBusyDelay},
		{name: "mismatch rejected by default", res: dedup.Result{Outcome: dedup.Duplicate, Mismatch: true},
			wantErr: func(err error) bool {
				return idemq.IsPermanent(err) && errors.Is(err, dedup.ErrPayloadMismatch)
			}},
		{name: "mismatch logged", res: dedup.Result{Outcome: dedup.Duplicate, Mismatch: true}, policy: MismatchLog,
			wantErr: isNil, wantWarn: true},
		{name: "mismatch ignored", res: dedup.Result{Outcome: dedup.Duplicate, Mismatch: true}, policy: MismatchIgnore,
			wantErr: isNil},
		{name: "unknown outcome retried", res: dedup.Result{Outcome: dedup.Outcome(42)},
			wantErr: func(err error) bool { return err != nil && !idemq.IsPermanent(err) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &scriptedStore{res: tc.res, err: tc.storeErr}
			logs := &logRecorder{}
			mw := must(Dedup(store, DedupConfig{
				OnMismatch: tc.policy,
				Logger:     slog.New(logs),
			}))
			called := false
			h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
				called = true
				return tc.handlerErr
			}), mw)
			ctx, outcomeOf := TrackOutcome(context.Background())
			msg := testMessage()
			err := h.Handle(ctx, msg)
			if !tc.wantErr(err) {
				t.Fatalf("err = %v", err)
			}
			if called != tc.wantCalled {
				t.Errorf("handler called = %v, want %v", called, tc.wantCalled)
			}
			if tc.wantDelay > 0 {
				if d, _ := idemq.RetryDelay(err); d != tc.wantDelay {
					t.Errorf("retry delay = %s, want %s", d, tc.wantDelay)
				}
			}
			if warned := len(logs.all()) > 0 && logs.all()[0].Level == slog.LevelWarn; warned != tc.wantWarn {
				t.Errorf("warned = %v, want %v (%d records)", warned, tc.wantWarn, len(logs.all()))
			}
			// The outcome reported to the transport follows the store's
			// decision; the handler sees the key it is deduplicated by.
			want := map[dedup.Outcome]string{dedup.Processed: OutcomeProcessed, dedup.Duplicate: OutcomeDuplicate, dedup.Busy: OutcomeBusy}[tc.res.Outcome]
			if got := outcomeOf(err); tc.storeErr == nil && tc.handlerErr == nil && err == nil && got != want {
				t.Errorf("outcome = %q, want %q", got, want)
			}
			if msg.Key != msg.DedupKey() || msg.Key == "" {
				t.Errorf("msg.Key = %q after Dedup, want the dedup key", msg.Key)
			}
		})
	}
}

func isNil(err error) bool { return err == nil }

func isBusy(err error) bool {
	_, ok := idemq.RetryDelay(err)
	return ok && errors.Is(err, dedup.ErrBusy) && !idemq.IsPermanent(err)
}

func TestDedupBuildsRequest(t *testing.T) {
	tests := []struct {
		name    string
		msgKey  string
		opts    DedupConfig
		wantKey string
		wantFP  bool
	}{
		{name: "message ID", wantKey: "1234567890", wantFP: true},
		{name: "message key", msgKey: "order:7", wantKey: "order:7", wantFP: true},
		{name: "key func", opts: DedupConfig{KeyFunc: func(m *idemq.Message) (string, error) {
			return "order:" + m.Property("tenant") + ":redpacket", nil
		}}, wantKey: "order:acme:redpacket", wantFP: true},
		{name: "no fingerprint", opts: DedupConfig{DisableFingerprint: true}, wantKey: "1234567890"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &scriptedStore{res: dedup.Result{Outcome: dedup.Processed}}
			var seenKey string
			h := chain(t, idemq.HandlerFunc(func(_ context.Context, m *idemq.Message) error {
				seenKey = m.DedupKey()
				return nil
			}), must(Dedup(store, tc.opts)))
			msg := testMessage()
			msg.Key = tc.msgKey
			if err := h.Handle(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
			reqs := store.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			want := dedup.Request{Group: "g1", Key: tc.wantKey, MessageID: "1234567890"}
			if tc.wantFP {
				want.Fingerprint = dedup.Fingerprint(msg.Body)
			}
			if reqs[0] != want {
				t.Errorf("request = %+v, want %+v", reqs[0], want)
			}
			if seenKey != tc.wantKey || msg.DedupKey() != tc.wantKey {
				t.Errorf("handler saw key %q, message key after = %q, want %q", seenKey, msg.DedupKey(), tc.wantKey)
			}
		})
	}
}

func TestDedupUnusableKeyIsPermanent(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*idemq.Message)
		opts  DedupConfig
		cause error
	}{
		{name: "empty key", edit: func(m *idemq.Message) { m.ID = "" }, cause: idemq.ErrEmptyKey},
		{name: "key too long", edit: func(m *idemq.Message) { m.Key = strings.Repeat("k", idemq.MaxKeyLen+1) }, cause: idemq.ErrKeyTooLong},
		{name: "NUL in key", edit: func(m *idemq.Message) { m.Key = "a\x00b" }, cause: idemq.ErrInvalidKey},
		{name: "empty group", edit: func(m *idemq.Message) { m.Group = "" }, cause: dedup.ErrEmptyGroup},
		{name: "key func fails", opts: DedupConfig{KeyFunc: func(*idemq.Message) (string, error) { return "", errBoom }}, cause: errBoom},
		{name: "key func returns empty", opts: DedupConfig{KeyFunc: func(*idemq.Message) (string, error) { return "", nil }}, cause: idemq.ErrEmptyKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &scriptedStore{res: dedup.Result{Outcome: dedup.Processed}}
			h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
				t.Error("handler called for a message without a usable key")
				return nil
			}), must(Dedup(store, tc.opts)))
			msg := testMessage()
			if tc.edit != nil {
				tc.edit(msg)
			}
			err := h.Handle(context.Background(), msg)
			if !idemq.IsPermanent(err) || !errors.Is(err, ErrNoDedupKey) || !errors.Is(err, tc.cause) {
				t.Fatalf("err = %v, want permanent ErrNoDedupKey wrapping %v", err, tc.cause)
			}
			if n := len(store.requests()); n != 0 {
				t.Errorf("store asked %d times", n)
			}
		})
	}
}

func TestDedupConfig(t *testing.T) {
	store := &scriptedStore{}
	tests := []struct {
		name  string
		store dedup.Store
		opts  DedupConfig
		want  error
	}{
		{"nil store", nil, DedupConfig{}, ErrNilStore},
		{"unknown policy", store, DedupConfig{OnMismatch: MismatchPolicy(9)}, ErrInvalidOption},
		{"negative busy delay", store, DedupConfig{MinBusyDelay: -time.Second}, ErrInvalidOption},
	}
	for _, tc := range tests {
		if _, err := Dedup(tc.store, tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestMismatchPolicyString(t *testing.T) {
	for p, want := range map[MismatchPolicy]string{MismatchReject: "reject", MismatchLog: "log", MismatchIgnore: "ignore", 7: "MismatchPolicy(7)"} {
		if got := p.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(p), got, want)
		}
	}
}
