package middleware

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func TestLoggingOneLinePerDelivery(t *testing.T) {
	tests := []struct {
		name      string
		store     dedup.Result
		handler   func(context.Context, *idemq.Message) error
		wantLevel slog.Level
		wantOut   string
		wantErr   bool
	}{
		{name: "processed", store: dedup.Result{Outcome: dedup.Processed},
			handler: func(context.Context, *idemq.Message) error { return nil }, wantLevel: slog.LevelDebug, wantOut: OutcomeProcessed},
		{name: "duplicate", store: dedup.Result{Outcome: dedup.Duplicate},
			wantLevel: slog.LevelDebug, wantOut: OutcomeDuplicate},
		{name: "busy", store: dedup.Result{Outcome: dedup.Busy, RetryAfter: time.Second},
			wantLevel: slog.LevelInfo, wantOut: OutcomeBusy, wantErr: true},
		{name: "retry", store: dedup.Result{Outcome: dedup.Processed},
			handler: func(context.Context, *idemq.Message) error { return errBoom }, wantLevel: slog.LevelWarn, wantOut: OutcomeRetry, wantErr: true},
		{name: "permanent", store: dedup.Result{Outcome: dedup.Processed},
			handler: func(context.Context, *idemq.Message) error { return idemq.Permanent(errBoom) }, wantLevel: slog.LevelWarn, wantOut: OutcomePermanent, wantErr: true},
		{name: "panic", store: dedup.Result{Outcome: dedup.Processed},
			handler: func(context.Context, *idemq.Message) error { panic("kaboom") }, wantLevel: slog.LevelWarn, wantOut: OutcomeRetry, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logRecorder{}
			h := chain(t, idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error { return tc.handler(ctx, m) }),
				Logging(slog.New(logs)),
				must(Dedup(&scriptedStore{res: tc.store}, DedupConfig{})),
				Recover())
			msg := testMessage()
			msg.Attempt = 2
			_ = h.Handle(context.Background(), msg)
			recs := logs.all()
			if len(recs) != 1 {
				t.Fatalf("%d log lines, want 1", len(recs))
			}
			r := recs[0]
			if r.Level != tc.wantLevel {
				t.Errorf("level = %s, want %s", r.Level, tc.wantLevel)
			}
			a := attrs(r)
			for k, want := range map[string]string{"group": "g1", "topic": "orders", "message_id": "1234567890", "key": "1234567890", "outcome": tc.wantOut} {
				if got := a[k].String(); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if a["attempt"].Int64() != 2 {
				t.Errorf("attempt = %v", a["attempt"])
			}
			if _, ok := a["duration"]; !ok {
				t.Error("no duration")
			}
			if _, ok := a["error"]; ok != tc.wantErr {
				t.Errorf("error attribute present = %v, want %v", ok, tc.wantErr)
			}
			if tc.name == "panic" && !strings.Contains(a["stack"].String(), "logging_test.go") {
				t.Errorf("panic line has no stack: %q", a["stack"])
			}
		})
	}
}

func TestLoggingDeadLetterIsWarn(t *testing.T) {
	logs := &logRecorder{}
	ledger := newFakeLedger()
	h := chain(t, failing(idemq.Permanent(errBoom)),
		Logging(slog.New(logs)),
		must(DeadLetter(ledger, DeadLetterConfig{Logger: slog.New(&logRecorder{})})))
	if err := h.Handle(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	recs := logs.all()
	if len(recs) != 1 || recs[0].Level != slog.LevelWarn {
		t.Fatalf("records = %v", recs)
	}
	a := attrs(recs[0])
	if a["outcome"].String() != OutcomeDeadLetter || a["dead_letter_id"].Int64() != 1 {
		t.Errorf("attrs = %v", a)
	}
}

func TestLoggingRespectsLevel(t *testing.T) {
	var b strings.Builder
	logger := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }), Logging(logger))
	if err := h.Handle(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 {
		t.Errorf("success logged above Debug: %s", b.String())
	}
	h = chain(t, failing(errBoom), Logging(logger))
	_ = h.Handle(context.Background(), testMessage())
	if !strings.Contains(b.String(), "outcome=retry") || !strings.Contains(b.String(), "error=boom") {
		t.Errorf("failure line = %q", b.String())
	}
}
