package middleware

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func TestStandardConfig(t *testing.T) {
	store, ledger := &scriptedStore{}, newFakeLedger()
	tests := []struct {
		name string
		cfg  StandardConfig
		want error
	}{
		{"no store", StandardConfig{Ledger: ledger}, ErrNilStore},
		{"no ledger", StandardConfig{Store: store}, ErrNilLedger},
		{"negative timeout", StandardConfig{Store: store, Ledger: ledger, Timeout: -time.Second}, ErrInvalidTimeout},
		{"bad dedup option", StandardConfig{Store: store, Ledger: ledger, Dedup: DedupOptions{OnMismatch: 5}}, ErrInvalidOption},
		{"bad dead letter option", StandardConfig{Store: store, Ledger: ledger, DeadLetter: DeadLetterOptions{MaxAttempts: -2}}, ErrInvalidOption},
	}
	for _, tc := range tests {
		if _, err := Standard(tc.cfg); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestStandardOptionalMiddlewares(t *testing.T) {
	store := &scriptedStore{res: dedup.Result{Outcome: dedup.Processed}}
	base := StandardConfig{Store: store, Ledger: newFakeLedger(), Logger: slog.New(slog.DiscardHandler)}
	tests := []struct {
		name string
		edit func(*StandardConfig)
		want int
	}{
		{"minimal", func(*StandardConfig) {}, 6},
		{"timeout", func(c *StandardConfig) { c.Timeout = time.Second }, 7},
		{"metrics", func(c *StandardConfig) { c.Registerer = prometheus.NewRegistry() }, 7},
		{"tracing", func(c *StandardConfig) { _, c.TracerProvider = newRecorder(t) }, 7},
		{"all", func(c *StandardConfig) {
			c.Timeout = time.Second
			c.Registerer = prometheus.NewRegistry()
			_, c.TracerProvider = newRecorder(t)
		}, 9},
	}
	for _, tc := range tests {
		cfg := base
		tc.edit(&cfg)
		mws, err := Standard(cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(mws) != tc.want {
			t.Errorf("%s: %d middlewares, want %d", tc.name, len(mws), tc.want)
		}
	}
}

func TestStandardWiresEverything(t *testing.T) {
	store := &scriptedStore{res: dedup.Result{Outcome: dedup.Processed}}
	reg := prometheus.NewRegistry()
	rec, tp := newRecorder(t)
	logs := &logRecorder{}
	mws, err := Standard(StandardConfig{
		Store: store, Ledger: newFakeLedger(), Logger: slog.New(logs),
		Timeout: time.Hour, Registerer: reg, TracerProvider: tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	var hasDeadline bool
	h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
		_, hasDeadline = ctx.Deadline()
		panic("handler bug")
	}), mws...)
	err = h.Handle(context.Background(), testMessage())
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a recovered panic", err)
	}
	if !hasDeadline {
		t.Error("handler ran without the configured timeout")
	}
	if len(rec.Ended()) != 1 {
		t.Errorf("%d spans, want 1", len(rec.Ended()))
	}
	if v := testutil.ToFloat64(mustCounter(t, reg)); v != 1 {
		t.Errorf("retry deliveries = %v, want 1", v)
	}
	if len(logs.all()) != 1 {
		t.Errorf("%d log lines, want 1", len(logs.all()))
	}
}

// mustCounter gathers the deliveries counter for result retry through a
// fresh Metrics on the same registry (which shares the collectors).
func mustCounter(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	m, err := newMetrics(reg, MetricsOptions{Namespace: "idemq", Subsystem: "consumer", Buckets: DefaultDurationBuckets})
	if err != nil {
		t.Fatal(err)
	}
	return m.deliveries.WithLabelValues("g1", "orders", OutcomeRetry)
}
