//go:build rocketmq

// Live tests: see doc.go for the rocketmq build tag.

package integration_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/rlog"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
)

func TestMain(m *testing.M) {
	rlog.SetLogLevel("error")
	os.Exit(m.Run())
}

var quiet = slog.New(slog.DiscardHandler)

// fast maps every retry to the shortest delay level (1 s, scaled).
var fast = middleware.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: -1}

// bundle is one test's broker, producer, SQLite store and effect counter.
type bundle struct {
	b     *rmqtest.Broker
	p     *producer.Producer
	store *sqldedup.Store
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := rmqtest.NewTest(t, rmqtest.Config{TimeScale: 0.01})
	ids, err := msgid.NewGenerator(msgid.FixedNode(11), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(producer.Config{NameServers: []string{b.Addr()}, IDSource: ids, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	db := testenv.OpenSQLite(t)
	store, err := sqldedup.New(db, sqldedup.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("CREATE TABLE effects (k TEXT NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	return &bundle{b: b, p: p, store: store}
}

// effectCount reads the committed effects of key from the database.
func (w *bundle) effectCount(t *testing.T, key string) int64 {
	t.Helper()
	var n int64
	if err := w.store.DB().Raw("SELECT COUNT(*) FROM effects WHERE k = ?", key).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (w *bundle) consume(t *testing.T, group, topic string, maxAttempts int, h idemq.HandlerFunc) *consumer.Consumer {
	t.Helper()
	chain, err := middleware.Standard(middleware.StandardConfig{Store: w.store, Ledger: w.store, Logger: quiet,
		DeadLetter: middleware.DeadLetterConfig{MaxAttempts: maxAttempts}})
	if err != nil {
		t.Fatal(err)
	}
	// The topic exists before the consumer starts, as on a real cluster.
	if err := w.b.CreateTopic(topic, 0); err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(consumer.Config{NameServers: []string{w.b.Addr()}, Group: group,
		Subscriptions: []consumer.Subscription{{Topic: topic}}, Handler: h, CustomChain: chain,
		MaxAttempts: maxAttempts, RetryPolicy: fast, StartFrom: consumer.StartFromFirst, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	// The first rebalance is done once every queue (and the retry queue)
	// has been pulled.
	eventually(t, 10*time.Second, "the consumer's first rebalance", func() bool {
		return w.b.PulledQueues(group, topic) == rmqtest.DefaultQueuesPerTopic && w.b.PulledQueues(group, "%RETRY%"+group) == 1
	})
	return c
}

// settled waits until the group has acknowledged everything the broker
// holds for it (committed offsets at every queue's end, no retry
// pending): the event after which "nothing more happened" is asserted.
func (w *bundle) settled(t *testing.T, group, topic string) {
	t.Helper()
	eventually(t, 20*time.Second, group+" to settle", func() bool { return w.b.Settled(group, topic) })
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}

func writeEffect(ctx context.Context, msg *idemq.Message) error {
	return dedup.Tx(ctx).Exec("INSERT INTO effects (k) VALUES (?)", msg.DedupKey()).Error
}

// TestLiveRedriveThroughBroker: a message fails permanently and is
// dead-lettered; the operator fixes the cause and redrives it through the
// producer with its original ID; the consumer processes it exactly once
// more, and a late duplicate of the original is still acknowledged without
// effect.
func TestLiveRedriveThroughBroker(t *testing.T) {
	w := setup(t)
	var fixed atomic.Bool
	var calls atomic.Int64
	w.consume(t, "cg-redrive", "payouts", 3, func(ctx context.Context, msg *idemq.Message) error {
		calls.Add(1)
		if !fixed.Load() {
			return idemq.Permanent(errors.New("wallet frozen"))
		}
		return writeEffect(ctx, msg)
	})
	msg := &idemq.Message{Topic: "payouts", Body: []byte("pay 88")}
	if _, err := w.p.SendSync(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var dls []dedup.DeadLetter
	eventually(t, 15*time.Second, "a dead letter", func() bool {
		dls, _ = w.store.DeadLetters(ctx, dedup.DeadLetterFilter{Group: "cg-redrive"})
		return len(dls) == 1
	})
	if dls[0].MessageID != msg.ID || string(dls[0].Body) != "pay 88" {
		t.Fatalf("dead letter %+v", dls[0])
	}
	// A duplicate of the dead message is acknowledged without running.
	before := calls.Load()
	if _, err := w.p.SendSync(ctx, msg); err != nil {
		t.Fatal(err)
	}
	w.settled(t, "cg-redrive", "payouts")
	if calls.Load() != before {
		t.Fatalf("a duplicate of a dead message ran the handler")
	}

	fixed.Store(true)
	var republished string
	err := w.store.Redrive(ctx, dls[0].ID, func(ctx context.Context, m *idemq.Message) error {
		republished = m.ID
		_, err := w.p.SendSync(ctx, m)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if republished != msg.ID {
		t.Fatalf("redrive published ID %q, want %q", republished, msg.ID)
	}
	eventually(t, 15*time.Second, "the redriven effect", func() bool { return w.effectCount(t, msg.ID) == 1 })
	// And once only, whatever else arrives.
	if _, err := w.p.SendSync(ctx, msg); err != nil {
		t.Fatal(err)
	}
	w.settled(t, "cg-redrive", "payouts")
	if n := w.effectCount(t, msg.ID); n != 1 {
		t.Fatalf("effects after redrive and a late duplicate = %d, want 1", n)
	}
}

// TestLiveSendBackDropped: the broker drops the connection on the
// send-back of a failed message (after answering the connection's held
// long polls). The client's send-back times out (3 s) and it sends the
// message into %RETRY%<group> itself; the message is processed once,
// nothing is lost, and nothing is left for StaleAttempts.
func TestLiveSendBackDropped(t *testing.T) {
	testSendBackFailure(t, "cg-sendback-drop", "o-1", func(b *rmqtest.Broker) { b.DropSendBack(1) })
}

// TestLiveSendBackRejected: the broker answers the send-back with an
// error. rocketmq-client-go v2.1.2 counted that as success and lost the
// message (upstream issue 1106); the pinned client sends it into
// %RETRY%<group> itself (at delay level 3+ReconsumeTimes, not the delay
// the consumer asked for). No loss: one effect, and the attempts ledger
// is left clean.
func TestLiveSendBackRejected(t *testing.T) {
	testSendBackFailure(t, "cg-sendback-fail", "o-2", func(b *rmqtest.Broker) { b.FailSendBack(1) })
}

func testSendBackFailure(t *testing.T, group, body string, fault func(*rmqtest.Broker)) {
	w := setup(t)
	var calls atomic.Int64
	w.consume(t, group, "orders", 5, func(ctx context.Context, msg *idemq.Message) error {
		if calls.Add(1) == 1 {
			return errors.New("transient")
		}
		return writeEffect(ctx, msg)
	})
	fault(w.b)
	msg := &idemq.Message{Topic: "orders", Body: []byte(body)}
	if _, err := w.p.SendSync(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	// Bounded: the send-back's 3 s timeout, the fallback's delay (level 3,
	// 10 s scaled to 100 ms) and the client's 3 s pause before pulling
	// again on a new connection.
	eventually(t, 20*time.Second, "the effect after a failed send-back", func() bool { return w.effectCount(t, msg.ID) == 1 })
	w.settled(t, group, "orders")
	if n := calls.Load(); n != 2 || w.effectCount(t, msg.ID) != 1 {
		t.Fatalf("calls %d effects %d, want 2 and 1", n, w.effectCount(t, msg.ID))
	}
	if s := w.b.Stats(); s.SendBacksFailed != 1 {
		t.Fatalf("broker stats %+v: the fault did not fire", s)
	}
	stale, err := w.store.StaleAttempts(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) != 0 {
		t.Fatalf("StaleAttempts = %+v after the message was processed", stale)
	}
}
