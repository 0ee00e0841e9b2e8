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
	mm := must(Metrics(reg, MetricsConfig{}))
	ledger := newFakeLedger()
	deliver := func(res dedup.Result, herr error) {
		t.Helper()
		h := chain(t, failing(herr), mm,
			must(DeadLetter(ledger, DeadLetterConfig{Logger: slog.New(&logRecorder{})})),
			must(Dedup(&scriptedStore{res: res}, DedupConfig{})))
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
	a := must(Metrics(reg, MetricsConfig{}))
	b := must(Metrics(reg, MetricsConfig{}))
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
	if _, err := Metrics(reg, MetricsConfig{}); err == nil {
		t.Fatal("a conflicting registration must be an error")
	}
}

func TestMetricsConfig(t *testing.T) {
	reg := prometheus.NewRegistry()
	mm := must(Metrics(reg, MetricsConfig{Namespace: "shop", Subsystem: "mq", ConstLabels: prometheus.Labels{"app": "x"}}))
	_ = chain(t, failing(nil), mm).Handle(context.Background(), testMessage())
	if n := testutil.CollectAndCount(reg, "shop_mq_deliveries_total"); n != 1 {
		t.Errorf("custom-named series = %d, want 1", n)
	}
	if _, err := Metrics(prometheus.NewRegistry(), MetricsConfig{Buckets: []float64{1, 1}}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("non-increasing buckets: %v", err)
	}
}

// The in-flight gauge counts a delivery while it is inside the chain, and
// a failure the Attempts middleware records counts as a failed attempt.
func TestMetricsInFlightAndFailedAttempts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	mm := must(Metrics(reg, MetricsConfig{}))
	ledger := newFakeLedger()
	inside := make(chan struct{})
	release := make(chan struct{})
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
		close(inside)
		<-release
		return errBoom
	}), mm, must(Attempts(ledger, AttemptsConfig{})))
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

// A delivery without the idemq message ID property is counted; one with it
// is not.
func TestMetricsMessagesWithoutID(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := chain(t, idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }), must(Metrics(reg, MetricsConfig{})))
	with := testMessage()
	with.Properties = map[string]string{idemq.PropertyMessageID: with.ID}
	without := testMessage()
	without.Properties = nil
	for _, m := range []*idemq.Message{with, without, without} {
		if err := h.Handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP idemq_consumer_messages_without_id_total Deliveries without an idemq message ID property; their key falls back to RocketMQ's MsgId, which a re-send does not keep.
# TYPE idemq_consumer_messages_without_id_total counter
idemq_consumer_messages_without_id_total{group="g1",topic="orders"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "idemq_consumer_messages_without_id_total"); err != nil {
		t.Fatal(err)
	}
}

// The handler-alone histogram gets a sample when Dedup ran the handler,
// and none for a duplicate, which never reaches it.
func TestMetricsHandlerRunDuration(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	mm := must(Metrics(reg, MetricsConfig{}))
	ok := idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil })
	for _, res := range []dedup.Result{{Outcome: dedup.Processed}, {Outcome: dedup.Duplicate}, {Outcome: dedup.Processed}} {
		h := chain(t, ok, mm, must(Dedup(&scriptedStore{res: res}, DedupConfig{})))
		if err := h.Handle(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				counts[mf.GetName()] = h.GetSampleCount()
			}
		}
	}
	if counts["idemq_consumer_handler_run_duration_seconds"] != 2 || counts["idemq_consumer_handler_duration_seconds"] != 3 {
		t.Fatalf("histogram samples = %v; want 2 handler runs of 3 deliveries", counts)
	}
}
