package redisdedup

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemq/idemq/internal/promfunc"
)

// MetricsConfig names the metrics of [FastPath.RegisterMetrics].
type MetricsConfig struct {
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
func (f *FastPath) RegisterMetrics(reg prometheus.Registerer, opts MetricsConfig) error {
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Subsystem == "" {
		opts.Subsystem = "redis_fastpath"
	}
	return promfunc.Register(reg, "redisdedup", promfunc.Config{Namespace: opts.Namespace, Subsystem: opts.Subsystem, ConstLabels: opts.ConstLabels}, []promfunc.Counter{
		{Name: "hits_total", Help: "Deliveries answered Duplicate from a Redis done marker.", Value: func() float64 { return float64(f.Stats().Hits) }},
		{Name: "misses_total", Help: "Deliveries Redis had no done marker for; the inner store decided them.", Value: func() float64 { return float64(f.Stats().Misses) }},
		{Name: "fallbacks_total", Help: "Deliveries sent to the inner store because Redis failed, timed out or was left alone after a failure.", Value: func() float64 { return float64(f.Stats().Fallbacks) }},
		{Name: "marker_writes_total", Help: "Done markers written to Redis.", Value: func() float64 { return float64(f.Stats().MarkerWrites) }},
		{Name: "marker_write_errors_total", Help: "Done markers that could not be written to Redis.", Value: func() float64 { return float64(f.Stats().MarkerWriteErrors) }},
	})
}
