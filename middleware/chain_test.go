package middleware

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
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
		{"fast path with a marker queue", StandardConfig{Store: store, Ledger: ledger, FastPath: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}),
			FastPathConfig: redisdedup.FastPathConfig{MarkerQueue: 8}}, ErrInvalidOption},
		{"bad dedup option", StandardConfig{Store: store, Ledger: ledger, Dedup: DedupConfig{OnMismatch: 5}}, ErrInvalidOption},
		{"bad dead letter option", StandardConfig{Store: store, Ledger: ledger, DeadLetter: DeadLetterConfig{MaxAttempts: -2}}, ErrInvalidOption},
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
		{"minimal (default timeout)", func(*StandardConfig) {}, 7},
		{"no timeout", func(c *StandardConfig) { c.Timeout = -1 }, 6},
		{"timeout", func(c *StandardConfig) { c.Timeout = time.Second }, 7},
		{"metrics", func(c *StandardConfig) { c.Registerer = prometheus.NewRegistry() }, 8},
		{"tracing", func(c *StandardConfig) { _, c.TracerProvider = newRecorder(t) }, 8},
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

// storeAndLedger is a store that keeps its own ledger, as sqldedup.Store.
type storeAndLedger struct {
	*scriptedStore
	*fakeLedger
}

// The store is given once: a store that is also a ledger is the ledger,
// and the handler runs under the default timeout.
func TestStandardStoreOnceAndDefaultTimeout(t *testing.T) {
	both := storeAndLedger{&scriptedStore{res: dedup.Result{Outcome: dedup.Processed}}, newFakeLedger()}
	mws, err := Standard(StandardConfig{Store: both, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Standard with a store that is its own ledger: %v", err)
	}
	var deadline time.Time
	h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
		deadline, _ = ctx.Deadline()
		return idemq.Permanent(errors.New("no"))
	}), mws...)
	before := time.Now()
	if err := h.Handle(context.Background(), testMessage()); err != nil {
		t.Fatalf("a permanent failure was not buried: %v", err)
	}
	if both.fakeLedger.buriedCount() != 1 {
		t.Fatalf("the store's own ledger got %d dead letters, want 1", both.fakeLedger.buriedCount())
	}
	if left := deadline.Sub(before); left < DefaultTimeout-time.Second || left > DefaultTimeout+time.Second {
		t.Fatalf("handler deadline %s after the start, want DefaultTimeout (%s)", left, DefaultTimeout)
	}
	if _, err := Standard(StandardConfig{Store: &scriptedStore{}}); err == nil || !strings.Contains(err.Error(), "set StandardConfig.Ledger") {
		t.Fatalf("Standard with a store that keeps no ledger: %v, want an error saying to set Ledger", err)
	}
}

// mustCounter gathers the deliveries counter for result retry through a
// fresh Metrics on the same registry (which shares the collectors).
func mustCounter(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	m, err := newMetrics(reg, MetricsConfig{Namespace: "idemq", Subsystem: "consumer", Buckets: DefaultDurationBuckets})
	if err != nil {
		t.Fatal(err)
	}
	return m.deliveries.WithLabelValues("g1", "orders", OutcomeRetry)
}

func (l *fakeLedger) buriedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buried)
}
