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

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func TestMetricsCountsOutcomes(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	mm := must(Metrics(reg, MetricsOptions{}))
	ledger := newFakeLedger()
	deliver := func(res dedup.Result, herr error) {
		t.Helper()
		h := chain(t, failing(herr), mm,
			must(DeadLetter(ledger, DeadLetterOptions{Logger: slog.New(&logRecorder{})})),
			must(Dedup(&scriptedStore{res: res}, DedupOptions{})))
		_ = h.Handle(context.Background(), testMessage())
	}
	processed := dedup.Result{Outcome: dedup.Processed}
	deliver(processed, nil)
	deliver(processed, nil)
	deliver(processed, errBoom)
	deliver(processed, idemq.Permanent(errBoom))
	deliver(dedup.Result{Outcome: dedup.Duplicate}, nil)
	deliver(dedup.Result{Outcome: dedup.Duplicate, Mismatch: true}, nil) // rejected: dead letter
	deliver(dedup.Result{Outcome: dedup.Busy, RetryAfter: time.Second}, nil)

	want := `
# HELP idemq_consumer_deliveries_total Message deliveries by consumer group, topic and result.
# TYPE idemq_consumer_deliveries_total counter
idemq_consumer_deliveries_total{group="g1",result="busy",topic="orders"} 1
idemq_consumer_deliveries_total{group="g1",result="dead_letter",topic="orders"} 2
idemq_consumer_deliveries_total{group="g1",result="duplicate",topic="orders"} 1
idemq_consumer_deliveries_total{group="g1",result="processed",topic="orders"} 2
idemq_consumer_deliveries_total{group="g1",result="retry",topic="orders"} 1
# HELP idemq_consumer_duplicates_total Duplicate deliveries acknowledged without running the handler.
# TYPE idemq_consumer_duplicates_total counter
idemq_consumer_duplicates_total{group="g1",topic="orders"} 2
# HELP idemq_consumer_busy_total Deliveries put back because another owner held the key's lease.
# TYPE idemq_consumer_busy_total counter
idemq_consumer_busy_total{group="g1",topic="orders"} 1
# HELP idemq_consumer_payload_mismatches_total Duplicate deliveries whose payload fingerprint differed from the stored one.
# TYPE idemq_consumer_payload_mismatches_total counter
idemq_consumer_payload_mismatches_total{group="g1",topic="orders"} 1
# HELP idemq_consumer_dead_letters_total Messages buried as dead letters.
# TYPE idemq_consumer_dead_letters_total counter
idemq_consumer_dead_letters_total{group="g1",topic="orders"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"idemq_consumer_deliveries_total", "idemq_consumer_duplicates_total", "idemq_consumer_busy_total",
		"idemq_consumer_payload_mismatches_total", "idemq_consumer_dead_letters_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "idemq_consumer_handler_duration_seconds"); n != 1 {
		t.Errorf("duration series = %d, want 1", n)
	}
}

func TestMetricsShareRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := must(Metrics(reg, MetricsOptions{}))
	b := must(Metrics(reg, MetricsOptions{}))
	ok := idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil })
	for _, mw := range []idemq.Middleware{a, b} {
		if err := chain(t, ok, mw).Handle(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range got {
		if mf.GetName() == "idemq_consumer_deliveries_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 2 {
				t.Fatalf("shared counter = %v, want 2", v)
			}
			return
		}
	}
	t.Fatal("deliveries counter not gathered")
}

func TestMetricsRegistrationConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	// A different collector under the same name, with other labels.
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "idemq", Subsystem: "consumer", Name: "busy_total", Help: "other",
	}, []string{"queue"}))
	if _, err := Metrics(reg, MetricsOptions{}); err == nil {
		t.Fatal("a conflicting registration must be an error")
	}
}

func TestMetricsOptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	mm := must(Metrics(reg, MetricsOptions{Namespace: "shop", Subsystem: "mq", ConstLabels: prometheus.Labels{"app": "x"}}))
	_ = chain(t, failing(nil), mm).Handle(context.Background(), testMessage())
	if n := testutil.CollectAndCount(reg, "shop_mq_deliveries_total"); n != 1 {
		t.Errorf("custom-named series = %d, want 1", n)
	}
	if _, err := Metrics(prometheus.NewRegistry(), MetricsOptions{Buckets: []float64{1, 1}}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("non-increasing buckets: %v", err)
	}
}

// The in-flight gauge counts a delivery while it is inside the chain, and
// a failure the Attempts middleware records counts as a failed attempt.
func TestMetricsInFlightAndFailedAttempts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	mm := must(Metrics(reg, MetricsOptions{}))
	ledger := newFakeLedger()
	inside := make(chan struct{})
	release := make(chan struct{})
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
		close(inside)
		<-release
		return errBoom
	}), mm, must(Attempts(ledger, AttemptsOptions{})))
	done := make(chan error, 1)
	go func() { done <- h.Handle(context.Background(), testMessage()) }()
	<-inside
	gauge := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "idemq_consumer_in_flight" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("in-flight gauge not gathered")
		return 0
	}
	if v := gauge(); v != 1 {
		t.Fatalf("in flight while the handler runs = %v, want 1", v)
	}
	close(release)
	if err := <-done; !errors.Is(err, errBoom) {
		t.Fatalf("err = %v", err)
	}
	if v := gauge(); v != 0 {
		t.Fatalf("in flight after = %v, want 0", v)
	}
	want := `
# HELP idemq_consumer_failed_attempts_total Failed attempts recorded in the attempts ledger.
# TYPE idemq_consumer_failed_attempts_total counter
idemq_consumer_failed_attempts_total{group="g1",topic="orders"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "idemq_consumer_failed_attempts_total"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}
