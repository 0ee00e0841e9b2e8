//go:build rocketmq

package consumer

import (
	"context"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
)

// A PostgreSQL outage pauses consumption instead of burning attempts: while
// the database is cut (through a TCP proxy; sqldedup marks the failures
// dedup.ErrUnavailable), the consumer retries its
// deliveries in place, sends nothing back to the broker (no broker-side
// attempt), records no attempt and buries nothing, even with MaxAttempts
// 2; once the database is back every message is processed exactly once.
func TestLiveOutagePausesConsumption(t *testing.T) {
	w := newWorld(t, rmqtest.Config{TimeScale: 0.01})
	direct := testenv.OpenPostgres(t)
	proxy := testenv.NewProxy(t, testenv.PostgresAddr(t))
	proxied, err := gorm.Open(postgres.Open(testenv.PostgresDSNVia(t, proxy.Addr())), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if sqlDB, err := proxied.DB(); err == nil {
		t.Cleanup(func() { _ = sqlDB.Close() })
	}
	prefix := testenv.TablePrefix(t)
	cfg := sqldedup.Config{TablePrefix: prefix, Logger: quiet()}
	ledger, err := sqldedup.New(direct, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	effects := prefix + "effects"
	if err := direct.Exec("CREATE TABLE " + effects + " (k VARCHAR(191) PRIMARY KEY)").Error; err != nil {
		t.Fatal(err)
	}
	testenv.DropTables(t, direct, effects, ledger.Table("dedup"), ledger.Table("attempts"), ledger.Table("dead_letters"))
	store, err := sqldedup.New(proxied, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, w, Config{
		Group:         "cg-outage",
		Subscriptions: []Subscription{{Topic: "outage"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			return dedup.Tx(ctx).Exec("INSERT INTO "+effects+" (k) VALUES (?)", msg.DedupKey()).Error
		}),
		Store:       store,
		Ledger:      ledger,
		DeadLetter:  middleware.DeadLetterConfig{MaxAttempts: 2},
		MaxAttempts: 2,
		RetryPolicy: fast,
	})

	proxy.Cut()
	ids := []string{"7300000000000000501", "7300000000000000502", "7300000000000000503"}
	for _, id := range ids {
		w.send(t, "outage", id, "outage "+id)
	}
	// Every message reached the chain and was retried in place at least
	// twice: the broker had every chance to see a send-back.
	eventually(t, 30*time.Second, "in-place retries (or send-backs) during the outage", func() bool {
		return c.Stats().OutageRetries >= 6 || w.b.Stats().SendBacks > 0
	})
	if s := w.b.Stats(); s.SendBacks != 0 {
		t.Fatalf("%d send-backs during the outage: the broker counted attempts", s.SendBacks)
	}
	for _, id := range ids {
		if rec, err := ledger.Attempts(context.Background(), "cg-outage", id); err != nil || rec.Count != 0 {
			t.Fatalf("attempts of %s during the outage = %+v, %v; want none", id, rec, err)
		}
	}

	proxy.Restore()
	eventually(t, 60*time.Second, "every message processed after the outage", func() bool {
		var n int64
		direct.Raw("SELECT COUNT(*) FROM " + effects).Scan(&n)
		return n == int64(len(ids))
	})
	if s := w.b.Stats(); s.SendBacks != 0 || len(w.b.DLQ("cg-outage")) != 0 {
		t.Errorf("broker stats %+v, %%DLQ%% %d: want no send-back and no dead letter", s, len(w.b.DLQ("cg-outage")))
	}
	if dls, err := ledger.DeadLetters(context.Background(), dedup.DeadLetterFilter{}); err != nil || len(dls) != 0 {
		t.Errorf("dead letters = %d, %v; want none", len(dls), err)
	}
	if s := c.Stats(); s.Retried != 0 || s.Succeeded != int64(len(ids)) {
		t.Errorf("consumer stats %+v", s)
	}
}
