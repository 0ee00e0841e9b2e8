package sqldedup

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// JanitorMetricsConfig names the metrics of Janitor.RegisterMetrics.
type JanitorMetricsConfig struct {
	// Namespace prefixes every metric name. Defaults to "idemq".
	Namespace string
	// Subsystem goes between the namespace and the name. Defaults to
	// "dedup_cleanup".
	Subsystem string
	// ConstLabels are added to every metric (to tell the janitors of two
	// table prefixes apart, say). Defaults to none.
	ConstLabels prometheus.Labels
	// ScrapeTimeout bounds the database reads of one scrape. Defaults to
	// 5 seconds.
	ScrapeTimeout time.Duration
}

// RegisterMetrics registers the janitor's metrics with reg
// (prometheus.DefaultRegisterer if nil). Names below are for the default
// namespace and subsystem:
//
//	idemq_dedup_cleanup_deleted_rows_total{table}    rows deleted past retention (dedup, attempts, dead_letters)
//	idemq_dedup_cleanup_passes_total                  passes run to the end
//	idemq_dedup_cleanup_errors_total                  passes that failed
//	idemq_dedup_cleanup_expired_rows                  done keys past retention now (counted up to ExpiredLimit)
//	idemq_dedup_cleanup_oldest_done_age_seconds       age of the oldest done key, by the database clock
//	idemq_dedup_cleanup_retention_seconds             the store's retention (Retention.Keep)
//
// The expired rows and the oldest age are read from the database at
// scrape time (Store.Backlog, two index reads), so they tell the truth
// even when the janitor is stuck; a read that fails is reported as a
// collect error. Cleanup keeps up while the oldest age stays near the
// retention plus Interval; alert on the difference
// (deploy/prometheus/idemq-alerts.yml: IdemqDedupCleanupBehind).
func (j *Janitor) RegisterMetrics(reg prometheus.Registerer, opts JanitorMetricsConfig) error {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Subsystem == "" {
		opts.Subsystem = "dedup_cleanup"
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = 5 * time.Second
	}
	name := func(n string) string { return prometheus.BuildFQName(opts.Namespace, opts.Subsystem, n) }
	c := &janitorCollector{
		j:       j,
		timeout: opts.ScrapeTimeout,
		deleted: prometheus.NewDesc(name("deleted_rows_total"), "Rows deleted because they were past retention, by table (dedup, attempts, dead_letters).", []string{"table"}, opts.ConstLabels),
		passes:  prometheus.NewDesc(name("passes_total"), "Cleanup passes run to the end.", nil, opts.ConstLabels),
		errs:    prometheus.NewDesc(name("errors_total"), "Cleanup passes that failed.", nil, opts.ConstLabels),
		expired: prometheus.NewDesc(name("expired_rows"), "Done dedup keys past retention, not deleted yet (counted up to 100000).", nil, opts.ConstLabels),
		oldest:  prometheus.NewDesc(name("oldest_done_age_seconds"), "Age of the oldest done dedup key, by the database clock (0 when there is none).", nil, opts.ConstLabels),
		keep:    prometheus.NewDesc(name("retention_seconds"), "How long done dedup keys are kept (Retention.Keep).", nil, opts.ConstLabels),
	}
	return reg.Register(c)
}

type janitorCollector struct {
	j       *Janitor
	timeout time.Duration

	deleted, passes, errs, expired, oldest, keep *prometheus.Desc
}

func (c *janitorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deleted, c.passes, c.errs, c.expired, c.oldest, c.keep} {
		ch <- d
	}
}

func (c *janitorCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.j.Stats()
	for table, v := range map[string]int64{"dedup": st.Deleted.Dedup, "attempts": st.Deleted.Attempts, "dead_letters": st.Deleted.DeadLetters} {
		ch <- prometheus.MustNewConstMetric(c.deleted, prometheus.CounterValue, float64(v), table)
	}
	ch <- prometheus.MustNewConstMetric(c.passes, prometheus.CounterValue, float64(st.Passes))
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(c.keep, prometheus.GaugeValue, c.j.s.cfg.Retention.Keep.Seconds())
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	b, err := c.j.s.Backlog(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.expired, err)
		ch <- prometheus.NewInvalidMetric(c.oldest, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.GaugeValue, float64(b.Expired))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, b.OldestDoneAge.Seconds())
}
