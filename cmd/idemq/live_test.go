//go:build rocketmq

// Live tests: the built command against the in-process test broker and a
// real consumer, on every database. scripts/test runs the rocketmq tag
// under -race.

package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/rlog"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/producer/outbox"
)

var quiet = slog.New(slog.DiscardHandler)

func init() { rlog.SetLogLevel("error") }

// count returns the committed effects of key.
func (tg target) count(t *testing.T, key string) int64 {
	t.Helper()
	var n int64
	if err := tg.db.Raw("SELECT COUNT(*) FROM "+tg.prefix+"effects WHERE k = ?", key).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// The 3 a.m. story end to end, on every database: a payout fails
// permanently and is dead-lettered; `idemq dead list` shows it (table and
// JSON); the cause is fixed; `idemq dead redrive` publishes it through the
// broker with its own ID and no node lease; the consumer processes it
// exactly once. Then an outbox row that failed is redriven from the
// command and arrives once.
func TestLiveCLIRedriveEndToEnd(t *testing.T) {
	for i, open := range targets(t) {
		t.Run(dbNames()[i], func(t *testing.T) {
			tg := open(t)
			ctx := context.Background()
			testenv.DropTables(t, tg.db, append(allTables(tg.prefix), tg.prefix+"effects")...)
			tg.ok(t, "migrate")
			if err := tg.db.Exec("CREATE TABLE " + tg.prefix + "effects (k VARCHAR(191) NOT NULL)").Error; err != nil {
				t.Fatal(err)
			}
			b := rmqtest.NewTest(t, rmqtest.Config{TimeScale: 0.01, Topics: []string{"payouts"}})
			ids, err := msgid.NewGenerator(msgid.FixedNode(7), msgid.GeneratorConfig{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := producer.New(producer.Config{NameServers: []string{b.Addr()}, IDSource: ids, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Shutdown(context.Background()) })
			store := tg.store(t)
			chain, err := middleware.Standard(middleware.StandardConfig{Store: store, Ledger: store, Logger: quiet,
				DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 3}})
			if err != nil {
				t.Fatal(err)
			}
			var fixed atomic.Bool
			handler := func(ctx context.Context, msg *idemq.Message) error {
				if strings.HasPrefix(string(msg.Body), "payout") && !fixed.Load() {
					return idemq.Permanent(errors.New("wallet 4711 frozen"))
				}
				return dedup.Tx(ctx).Exec("INSERT INTO "+tg.prefix+"effects (k) VALUES (?)", msg.ID).Error
			}
			c, err := consumer.New(consumer.Config{NameServers: []string{b.Addr()}, Group: "payments",
				Subscriptions: []consumer.Subscription{{Topic: "payouts"}}, StartFrom: consumer.StartFromFirst, Handler: idemq.HandlerFunc(handler), CustomChain: chain,
				MaxAttempts: 3, RetryPolicy: middleware.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: -1},
				Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Shutdown(context.Background()) })
			// The first rebalance is done once every queue (and the retry
			// queue) has been pulled.
			testenv.Eventually(t, 10*time.Second, "the consumer's first rebalance", func() bool {
				return b.PulledQueues("payments", "payouts") == rmqtest.DefaultQueuesPerTopic && b.PulledQueues("payments", "%RETRY%payments") == 1
			})

			msg := &idemq.Message{Topic: "payouts", Body: []byte("payout 88")}
			if _, err := p.SendSync(ctx, msg); err != nil {
				t.Fatal(err)
			}
			var listed struct {
				DeadLetters []struct {
					ID        int64  `json:"id"`
					MessageID string `json:"message_id"`
					Reason    string `json:"reason"`
				} `json:"dead_letters"`
			}
			var lastOut, lastErr string
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("last `idemq dead list`: %s %s", lastOut, lastErr)
				}
			})
			testenv.Eventually(t, 30*time.Second, "the dead letter in `idemq dead list --json`", func() bool {
				out, stderr, err := tg.run(t, "", "--json", "dead", "list", "--group", "payments")
				lastOut, lastErr = out, stderr
				return err == nil && json.Unmarshal([]byte(out), &listed) == nil && len(listed.DeadLetters) == 1
			})
			if listed.DeadLetters[0].MessageID != msg.ID || !strings.Contains(listed.DeadLetters[0].Reason, "wallet 4711 frozen") {
				t.Fatalf("dead letter: %+v", listed.DeadLetters[0])
			}
			if out := tg.ok(t, "dead", "list"); !strings.Contains(out, msg.ID) || !strings.Contains(out, "wallet 4711 frozen") {
				t.Fatalf("dead list table:\n%s", out)
			}

			fixed.Store(true)
			out := tg.ok(t, "--namesrv", b.Addr(), "--yes", "dead", "redrive", "--message-id", msg.ID)
			if !strings.Contains(out, "redrive: 1 of 1 done") {
				t.Fatalf("redrive:\n%s", out)
			}
			testenv.Eventually(t, 30*time.Second, "the redriven payout's effect", func() bool { return tg.count(t, msg.ID) == 1 })
			if out := tg.ok(t, "--namesrv", b.Addr(), "--yes", "dead", "redrive", "--message-id", msg.ID); !strings.Contains(out, "Nothing matches") {
				t.Fatalf("second redrive:\n%s", out)
			}
			// Once only: a later message on the same queue is processed,
			// and the payout still has one effect.
			sentinel := &idemq.Message{Topic: "payouts", Body: []byte("sentinel 1")}
			if _, err := p.SendSync(ctx, sentinel); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 30*time.Second, "the sentinel", func() bool { return tg.count(t, sentinel.ID) == 1 })
			if n := tg.count(t, msg.ID); n != 1 {
				t.Fatalf("payout effects = %d, want 1", n)
			}

			// The outbox: a row fails permanently at the relay, the
			// operator redrives it from the command, a relay sends it and it
			// arrives once.
			ob, err := outbox.New(tg.db, outbox.Config{IDSource: ids, TablePrefix: tg.prefix, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			row := &idemq.Message{Topic: "payouts", Body: []byte("outbox refund 9")}
			if err := tg.db.Transaction(func(tx *gorm.DB) error { return ob.Enqueue(tx, row) }); err != nil {
				t.Fatal(err)
			}
			broken, err := outbox.NewRelay(ob, outbox.SenderFunc(func(context.Context, *idemq.Message) (string, error) {
				return "", idemq.Permanent(errors.New("topic route missing"))
			}), outbox.RelayConfig{ID: "broken"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := broken.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if out := tg.ok(t, "outbox", "list", "--status", "failed"); !strings.Contains(out, row.ID) {
				t.Fatalf("outbox list:\n%s", out)
			}
			if out := tg.ok(t, "--yes", "outbox", "redrive", row.ID); !strings.Contains(out, "redrive: 1 of 1 done") {
				t.Fatalf("outbox redrive:\n%s", out)
			}
			relay, err := outbox.NewRelay(ob, p, outbox.RelayConfig{ID: "fixed"})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := relay.RunOnce(ctx); err != nil || n != 1 {
				t.Fatalf("relay sent %d, %v", n, err)
			}
			testenv.Eventually(t, 30*time.Second, "the redriven outbox message", func() bool { return tg.count(t, row.ID) == 1 })
			sentinel2 := &idemq.Message{Topic: "payouts", Body: []byte("sentinel 2")}
			if _, err := p.SendSync(ctx, sentinel2); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 30*time.Second, "the second sentinel", func() bool { return tg.count(t, sentinel2.ID) == 1 })
			if n := tg.count(t, row.ID); n != 1 {
				t.Fatalf("outbox message effects = %d, want 1", n)
			}
			var audit struct {
				Records []struct {
					Action string `json:"action"`
				} `json:"records"`
			}
			tg.jsonOf(t, &audit, "audit")
			if len(audit.Records) != 3 || audit.Records[0].Action != "outbox.redrive" || audit.Records[1].Action != "dead.redrive" ||
				audit.Records[2].Action != "migrate" {
				t.Fatalf("audit: %+v", audit)
			}
		})
	}
}
