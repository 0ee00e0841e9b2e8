package redisdedup

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricsOptions names the metrics of [FastPath.RegisterMetrics].
type MetricsOptions struct {
	// Namespace prefixes every metric name. Defaults to "idemq".
	Namespace string
	// Subsystem goes between the namespace and the name. Defaults to
	// "redis_fastpath".
	Subsystem string
	// ConstLabels are added to every metric (to tell two fast paths
	// apart, say). Defaults to none.
	ConstLabels prometheus.Labels
}

// RegisterMetrics registers f's [FastPathStats] with reg
// (prometheus.DefaultRegisterer if nil) as counters read at scrape time.
// Names below are for the default namespace and subsystem:
//
//	idemq_redis_fastpath_hits_total                duplicates answered from a Redis marker
//	idemq_redis_fastpath_misses_total              deliveries Redis had no marker for
//	idemq_redis_fastpath_fallbacks_total           deliveries sent to the database because Redis failed or was left alone
//	idemq_redis_fastpath_marker_writes_total       done markers written
//	idemq_redis_fastpath_marker_write_errors_total done markers that could not be written
//
// A rising fallbacks counter means Redis is down or slow and every delivery
// is decided by the database alone: alert on its rate. Registering two
// fast paths under the same names needs distinguishing ConstLabels; the
// registry's error is returned otherwise.
func (f *FastPath) RegisterMetrics(reg prometheus.Registerer, opts MetricsOptions) error {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Subsystem == "" {
		opts.Subsystem = "redis_fastpath"
	}
	counters := []struct {
		name, help string
		value      func(FastPathStats) uint64
	}{
		{"hits_total", "Deliveries answered Duplicate from a Redis done marker.", func(s FastPathStats) uint64 { return s.Hits }},
		{"misses_total", "Deliveries Redis had no done marker for; the inner store decided them.", func(s FastPathStats) uint64 { return s.Misses }},
		{"fallbacks_total", "Deliveries sent to the inner store because Redis failed, timed out or was left alone after a failure.", func(s FastPathStats) uint64 { return s.Fallbacks }},
		{"marker_writes_total", "Done markers written to Redis.", func(s FastPathStats) uint64 { return s.MarkerWrites }},
		{"marker_write_errors_total", "Done markers that could not be written to Redis.", func(s FastPathStats) uint64 { return s.MarkerWriteErrors }},
	}
	var errs []error
	for _, c := range counters {
		value := c.value
		err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: opts.Namespace, Subsystem: opts.Subsystem, Name: c.name, Help: c.help, ConstLabels: opts.ConstLabels,
		}, func() float64 { return float64(value(f.Stats())) }))
		if err != nil {
			errs = append(errs, fmt.Errorf("redisdedup: register %s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}
