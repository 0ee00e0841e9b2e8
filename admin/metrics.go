package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CollectorConfig configures the Collector.
type CollectorConfig struct {
	// Namespace prefixes every metric name. Defaults to "idemq".
	Namespace string
	// Timeout bounds the queries of one scrape. Defaults to 10 seconds.
	Timeout time.Duration
	// ConstLabels are added to every metric. Defaults to none.
	ConstLabels prometheus.Labels
}

// Collector returns a Prometheus collector that reads the tables on every
// scrape (a few aggregate queries) and exports what an operator must act
// on. Names below are for the default namespace:
//
//	idemq_dead_letters_waiting{group,topic}   dead letters not yet redriven or discarded
//	idemq_attempts_retrying{group}            keys with recorded failures waiting for a retry
//	idemq_attempts_stale{group}               of those, keys whose last failure is older than Config.StaleAfter
//	idemq_outbox_pending                      outbox rows not yet sent (claimed ones included)
//	idemq_outbox_claimed                      pending rows a relay holds right now
//	idemq_outbox_failed                       outbox rows left for an operator
//	idemq_outbox_oldest_pending_age_seconds   age of the oldest pending row by the database clock
//
// The outbox series are absent when the outbox table does not exist. A
// scrape whose queries fail reports the error to Prometheus (the scrape
// fails) rather than stale numbers. Register it once per database and
// prefix, in one process (a sidecar or the `idemq` host), not in every
// consumer replica.
func (a *Admin) Collector(opts CollectorConfig) prometheus.Collector {
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	d := func(sub, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(opts.Namespace, sub, name), help, labels, opts.ConstLabels)
	}
	return &collector{
		a:       a,
		timeout: opts.Timeout,
		dead:    d("dead_letters", "waiting", "Dead letters waiting for an operator (not redriven, not discarded).", "group", "topic"),
		retry:   d("attempts", "retrying", "Keys with recorded failures waiting for a retry.", "group"),
		stale:   d("attempts", "stale", "Keys whose last recorded failure is older than the stale threshold: the broker stopped redelivering them.", "group"),
		pending: d("outbox", "pending", "Outbox rows not yet sent, claimed ones included."),
		claimed: d("outbox", "claimed", "Pending outbox rows a relay holds right now."),
		failed:  d("outbox", "failed", "Outbox rows that failed and are left for an operator."),
		oldest:  d("outbox", "oldest_pending_age_seconds", "Age of the oldest pending outbox row, by the database clock; 0 without a backlog."),
	}
}

type collector struct {
	a                                                    *Admin
	timeout                                              time.Duration
	dead, retry, stale, pending, claimed, failed, oldest *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.dead, c.retry, c.stale, c.pending, c.claimed, c.failed, c.oldest} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.dead, err)
	}
}

func (c *collector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	a := c.a
	var dead []struct {
		Grp   string
		Topic string
		N     int64
	}
	if err := a.db.WithContext(ctx).Raw("SELECT consumer_group AS grp, topic, COUNT(*) AS n FROM " + a.table("dead_letters") +
		" WHERE redriven_at IS NULL GROUP BY consumer_group, topic").Scan(&dead).Error; err != nil {
		return fmt.Errorf("admin: metrics: %w", err)
	}
	for _, r := range dead {
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(r.N), r.Grp, r.Topic)
	}
	var at []struct {
		Grp   string
		N     int64
		Stale int64
	}
	if err := a.db.WithContext(ctx).Raw("SELECT consumer_group AS grp, COUNT(*) AS n, SUM(CASE WHEN last_at < "+a.nowMs()+
		" - ? THEN 1 ELSE 0 END) AS stale FROM "+a.table("attempts")+" GROUP BY consumer_group", a.cfg.StaleAfter.Milliseconds()).Scan(&at).Error; err != nil {
		return fmt.Errorf("admin: metrics: %w", err)
	}
	for _, r := range at {
		ch <- prometheus.MustNewConstMetric(c.retry, prometheus.GaugeValue, float64(r.N), r.Grp)
		ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(r.Stale), r.Grp)
	}
	if !a.hasTable(ctx, "outbox") {
		return nil
	}
	s, err := a.OutboxStats(ctx)
	if err != nil {
		return err
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(c.claimed, prometheus.GaugeValue, float64(s.Claimed))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.GaugeValue, float64(s.Failed))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, s.OldestPendingAge.Seconds())
	return nil
}
