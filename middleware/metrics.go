package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// DefaultDurationBuckets are the handler duration histogram's buckets, in
// seconds: 5 ms to about 80 s.
var DefaultDurationBuckets = prometheus.ExponentialBuckets(0.005, 2, 15)

// MetricsConfig configures Metrics.
type MetricsConfig struct {
	// Namespace prefixes every metric name. Defaults to "idemq".
	Namespace string
	// Subsystem goes between the namespace and the name. Defaults to
	// "consumer".
	Subsystem string
	// Buckets are the handler duration histogram's buckets, in seconds.
	// Defaults to DefaultDurationBuckets.
	Buckets []float64
	// ConstLabels are added to every metric. Defaults to none.
	ConstLabels prometheus.Labels
}

// Metrics returns a middleware that records Prometheus metrics for every
// delivery, registered with reg (prometheus.DefaultRegisterer if nil).
// Names below are for the default namespace and subsystem:
//
//	idemq_consumer_deliveries_total{group,topic,result}  deliveries by outcome
//	idemq_consumer_handler_duration_seconds{group,topic} time in the chain inside Metrics
//	idemq_consumer_handler_run_duration_seconds{group,topic} time in the handler alone, inside Dedup's transaction or lease
//	idemq_consumer_duplicates_total{group,topic}         duplicates acknowledged without running the handler
//	idemq_consumer_busy_total{group,topic}               deliveries put back because another owner held the key
//	idemq_consumer_payload_mismatches_total{group,topic} duplicates whose payload differed
//	idemq_consumer_dead_letters_total{group,topic}       messages buried as dead letters
//	idemq_consumer_failed_attempts_total{group,topic}    failed attempts recorded in the attempts ledger
//	idemq_consumer_in_flight{group,topic}                deliveries inside the chain right now (gauge)
//	idemq_consumer_messages_without_id_total{group,topic} deliveries without an idemq message ID property
//
// The result label takes the values of the Outcome constants. Dedup's and
// DeadLetter's decisions reach Metrics through the delivery's context, so
// Metrics must sit outside them (see Standard); no hook needs wiring.
//
// Calling Metrics twice with one registry (for two consumer groups, say)
// shares the collectors: an AlreadyRegisteredError for an identical
// collector is not an error. Any other registration error is returned.
func Metrics(reg prometheus.Registerer, opts MetricsConfig) (idemq.Middleware, error) {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Subsystem == "" {
		opts.Subsystem = "consumer"
	}
	if opts.Buckets == nil {
		opts.Buckets = DefaultDurationBuckets
	}
	for i := 1; i < len(opts.Buckets); i++ {
		if opts.Buckets[i] <= opts.Buckets[i-1] {
			return nil, fmt.Errorf("%w: histogram buckets must increase", ErrInvalidOption)
		}
	}
	m, err := newMetrics(reg, opts)
	if err != nil {
		return nil, err
	}
	return m.middleware, nil
}

type metrics struct {
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	run        *prometheus.HistogramVec
	duplicates *prometheus.CounterVec
	busy       *prometheus.CounterVec
	mismatches *prometheus.CounterVec
	dead       *prometheus.CounterVec
	failed     *prometheus.CounterVec
	withoutID  *prometheus.CounterVec
	inFlight   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, o MetricsConfig) (*metrics, error) {
	counter := func(name, help string, labels ...string) (*prometheus.CounterVec, error) {
		return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: name, Help: help, ConstLabels: o.ConstLabels,
		}, labels))
	}
	var (
		m    metrics
		errs []error
		err  error
	)
	m.deliveries, err = counter("deliveries_total", "Message deliveries by consumer group, topic and result.", "group", "topic", "result")
	errs = append(errs, err)
	m.duplicates, err = counter("duplicates_total", "Duplicate deliveries acknowledged without running the handler.", "group", "topic")
	errs = append(errs, err)
	m.busy, err = counter("busy_total", "Deliveries put back because another owner held the key's lease.", "group", "topic")
	errs = append(errs, err)
	m.mismatches, err = counter("payload_mismatches_total", "Duplicate deliveries whose payload fingerprint differed from the stored one.", "group", "topic")
	errs = append(errs, err)
	m.dead, err = counter("dead_letters_total", "Messages buried as dead letters.", "group", "topic")
	errs = append(errs, err)
	m.failed, err = counter("failed_attempts_total", "Failed attempts recorded in the attempts ledger.", "group", "topic")
	errs = append(errs, err)
	m.withoutID, err = counter("messages_without_id_total",
		"Deliveries without an idemq message ID property; their key falls back to RocketMQ's MsgId, which a re-send does not keep.", "group", "topic")
	errs = append(errs, err)
	m.inFlight, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "in_flight",
		Help: "Deliveries inside the handler chain right now.", ConstLabels: o.ConstLabels,
	}, []string{"group", "topic"}))
	errs = append(errs, err)
	m.duration, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "handler_duration_seconds",
		Help: "Time a delivery spent in the handler chain.", ConstLabels: o.ConstLabels, Buckets: o.Buckets,
	}, []string{"group", "topic"}))
	errs = append(errs, err)
	m.run, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "handler_run_duration_seconds",
		Help: "Time the handler alone ran, inside Dedup's transaction or lease (without the store's own work).", ConstLabels: o.ConstLabels, Buckets: o.Buckets,
	}, []string{"group", "topic"}))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &m, nil
}

// register registers c, or returns the identical collector registered
// before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("middleware: register metrics: %w", err)
}

func (m *metrics) middleware(next idemq.Handler) idemq.Handler {
	return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		ctx, d := ensureDelivery(ctx)
		if msg.Property(idemq.PropertyMessageID) == "" {
			m.withoutID.WithLabelValues(msg.Group, msg.Topic).Inc()
		}
		inFlight := m.inFlight.WithLabelValues(msg.Group, msg.Topic)
		inFlight.Inc()
		start := time.Now()
		err := next.Handle(ctx, msg)
		m.duration.WithLabelValues(msg.Group, msg.Topic).Observe(time.Since(start).Seconds())
		inFlight.Dec()
		m.deliveries.WithLabelValues(msg.Group, msg.Topic, outcome(d, err)).Inc()
		if t, ok := d.handlerRun(); ok {
			m.run.WithLabelValues(msg.Group, msg.Topic).Observe(t.Seconds())
		}
		res, att, dead, _ := d.snapshot()
		if att != nil {
			m.failed.WithLabelValues(msg.Group, msg.Topic).Inc()
		}
		if res != nil {
			switch res.Outcome {
			case dedup.Duplicate:
				m.duplicates.WithLabelValues(msg.Group, msg.Topic).Inc()
			case dedup.Busy:
				m.busy.WithLabelValues(msg.Group, msg.Topic).Inc()
			}
			if res.Mismatch {
				m.mismatches.WithLabelValues(msg.Group, msg.Topic).Inc()
			}
		}
		if dead {
			m.dead.WithLabelValues(msg.Group, msg.Topic).Inc()
		}
		return err
	})
}
