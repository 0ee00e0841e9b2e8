//go:build rocketmq

package consumer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
)

// The consumer runs the store's retention by default: a done row past a
// short retention disappears while the consumer runs, and the janitor's
// metrics are registered with the consumer's Registerer beside the
// chain's. With NoRetention the janitor is not run.
func TestLiveRetentionByDefault(t *testing.T) {
	w := newWorld(t, rmqtest.Config{TimeScale: 0.01})
	const keep = 300 * time.Millisecond
	newStore := func() *sqldedup.Store {
		s, err := sqldedup.New(w.db, sqldedup.Config{
			TablePrefix: "short_",
			Retention:   dedup.Retention{Keep: keep, RetryHorizon: time.Millisecond, RedriveWindow: time.Millisecond},
			Logger:      quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	store := newStore()
	count := func() int64 {
		var n int64
		if err := w.db.Raw("SELECT COUNT(*) FROM short_dedup WHERE dedup_key = 'old-1'").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	done := func(key string) {
		if _, err := store.Process(context.Background(), dedup.Request{Group: "cg-retention", Key: key}, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(group string, reg prometheus.Registerer) Config {
		return Config{
			Group:         group,
			Subscriptions: []Subscription{{Topic: "retention"}},
			Store:         store,
			Handler:       idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }),
			RetryPolicy:   fast,
			MaxAttempts:   1,
			Registerer:    reg,
		}
	}

	// Opted out: a message is processed (the consumer ran), the expired
	// row stays and no janitor metric is registered.
	done("old-1")
	time.Sleep(2 * keep) // past retention
	reg := prometheus.NewRegistry()
	c := start(t, w, func() Config { c := cfg("cg-noretention", reg); c.NoRetention = true; return c }())
	w.send(t, "retention", "7300000000000000901", "x")
	eventually(t, 10*time.Second, "the message processed", func() bool { return c.Stats().Processed == 1 })
	if n := count(); n != 1 {
		t.Fatalf("with NoRetention the expired row was deleted (%d rows)", n)
	}
	if janitorMetrics(t, reg) {
		t.Fatal("with NoRetention the janitor's metrics were registered")
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// By default: the janitor's first pass, at Start, deletes it.
	reg = prometheus.NewRegistry()
	start(t, w, cfg("cg-retention", reg))
	eventually(t, 10*time.Second, "the expired row deleted by the consumer's janitor", func() bool { return count() == 0 })
	if !janitorMetrics(t, reg) {
		t.Fatal("the janitor's metrics are not registered with the consumer's Registerer")
	}
}

// janitorMetrics reports whether reg holds the janitor's metrics (and the
// chain's, which every consumer with a Registerer has).
func janitorMetrics(t *testing.T, reg *prometheus.Registry) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var janitor, chain bool
	for _, mf := range mfs {
		janitor = janitor || strings.HasPrefix(mf.GetName(), "idemq_dedup_cleanup_")
		chain = chain || strings.HasPrefix(mf.GetName(), "idemq_consumer_")
	}
	if !chain {
		t.Fatal("the chain's metrics are not registered")
	}
	return janitor
}
