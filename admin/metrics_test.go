package admin_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/internal/testenv"
)

// The collector's names pass Prometheus's lint and its values follow the
// tables, on every database.
func TestCollector(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			b.bury(t, "g1", "orders", "k1", "boom")
			b.bury(t, "g1", "orders", "k2", "boom")
			b.bury(t, "g2", "mails", "k3", "boom")
			if _, err := b.store.RecordFailure(b.ctx, "g1", "r1", 1, errors.New("flaky")); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.RecordFailure(b.ctx, "g1", "r2", 1, errors.New("flaky")); err != nil {
				t.Fatal(err)
			}
			if err := b.db.Exec("UPDATE " + b.prefix + "attempts SET last_at = last_at - 86400000 WHERE dedup_key = 'r2'").Error; err != nil {
				t.Fatal(err)
			}
			ob := b.newOutbox(t)
			if err := b.db.Transaction(func(tx *gorm.DB) error {
				return ob.Enqueue(tx, &idemq.Message{Topic: "t", Body: []byte("x")})
			}); err != nil {
				t.Fatal(err)
			}
			c := b.admin.Collector(admin.CollectorConfig{})
			if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
				t.Fatalf("lint: %v %+v", err, problems)
			}
			want := `
# HELP idemq_dead_letters_waiting Dead letters waiting for an operator (not redriven, not discarded).
# TYPE idemq_dead_letters_waiting gauge
idemq_dead_letters_waiting{group="g1",topic="orders"} 2
idemq_dead_letters_waiting{group="g2",topic="mails"} 1
# HELP idemq_attempts_retrying Keys with recorded failures waiting for a retry.
# TYPE idemq_attempts_retrying gauge
idemq_attempts_retrying{group="g1"} 2
# HELP idemq_attempts_stale Keys whose last recorded failure is older than the stale threshold: the broker stopped redelivering them.
# TYPE idemq_attempts_stale gauge
idemq_attempts_stale{group="g1"} 1
# HELP idemq_outbox_pending Outbox rows not yet sent, claimed ones included.
# TYPE idemq_outbox_pending gauge
idemq_outbox_pending 1
# HELP idemq_outbox_failed Outbox rows that failed and are left for an operator.
# TYPE idemq_outbox_failed gauge
idemq_outbox_failed 0
`
			if err := testutil.CollectAndCompare(c, strings.NewReader(want), "idemq_dead_letters_waiting", "idemq_attempts_retrying",
				"idemq_attempts_stale", "idemq_outbox_pending", "idemq_outbox_failed"); err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == "idemq_outbox_oldest_pending_age_seconds" {
					if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 0 || v > float64(time.Hour/time.Second) {
						t.Fatalf("oldest pending age = %v", v)
					}
					return
				}
			}
			t.Fatal("oldest pending age not gathered")
		})
	}
}
