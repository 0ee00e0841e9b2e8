//go:build rocketmq || rocketmq_norace

// Tests in files with the rocketmq build tag run the real
// rocketmq-client-go push consumer against the in-process test broker
// (integration/rmqtest), under -race:
//
//	go test -race -tags rocketmq -run 'TestLive|Example' ./consumer/
//
// Those with the rocketmq_norace tag meet data races inside the client
// itself (named next to them) and run without -race:
//
//	go test -tags rocketmq_norace -run TestLive ./consumer/

package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
)

// quiet is a logger for the consumer and the chain; set
// IDEMQ_TEST_LOG=1 to see their logs.
func quiet() *slog.Logger {
	if os.Getenv("IDEMQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fast is a retry policy for a broker with a TimeScale: every delay maps
// to RocketMQ's shortest level (1s, scaled).
var fast = middleware.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: -1}

// world is one test's broker, producer and SQLite dedup store, with an
// effects table the handlers write to through dedup.Tx.
type world struct {
	b      *rmqtest.Broker
	queues int
	p      *producer.Producer
	db     *gorm.DB
	store  *sqldedup.Store
}

func newWorld(t *testing.T, bcfg rmqtest.Config) *world {
	t.Helper()
	b := rmqtest.NewTest(t, bcfg)
	ids, err := msgid.NewGenerator(msgid.FixedNode(7), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(producer.Config{
		NameServers: []string{b.Addr()},
		Group:       "pg_" + t.Name(),
		IDSource:    ids,
		Logger:      quiet(),
	})
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })

	db := testenv.OpenSQLite(t)
	store, err := sqldedup.New(db, sqldedup.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	// seq gives the commit order (SQLite serialises writers).
	if err := db.Exec(`CREATE TABLE effects (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		k TEXT NOT NULL, body TEXT NOT NULL, attempt INTEGER NOT NULL)`).Error; err != nil {
		t.Fatal(err)
	}
	queues := bcfg.QueuesPerTopic
	if queues == 0 {
		queues = rmqtest.DefaultQueuesPerTopic
	}
	return &world{b: b, queues: queues, p: p, db: db, store: store}
}

// writeEffect records msg's effect in the dedup transaction.
func writeEffect(ctx context.Context, msg *idemq.Message) error {
	tx := dedup.Tx(ctx)
	if tx == nil {
		return fmt.Errorf("no dedup transaction")
	}
	return tx.Exec("INSERT INTO effects (k, body, attempt) VALUES (?, ?, ?)", msg.DedupKey(), string(msg.Body), msg.Attempt).Error
}

type effect struct {
	Seq     int64
	K       string
	Body    string
	Attempt int
}

func (w *world) effects(t *testing.T) []effect {
	t.Helper()
	var out []effect
	if err := w.db.Raw("SELECT seq, k, body, attempt FROM effects ORDER BY seq").Scan(&out).Error; err != nil {
		t.Fatal(err)
	}
	return out
}

// send sends a message with the given idemq ID (a re-send of the same ID is
// a duplicate for the consumers).
func (w *world) send(t *testing.T, topic, id, body string) {
	t.Helper()
	w.topic(t, topic)
	msg := &idemq.Message{ID: id, Topic: topic, Body: []byte(body)}
	if _, err := w.p.SendSync(context.Background(), msg); err != nil {
		t.Fatalf("send %s: %v", id, err)
	}
}

// topic creates topic on the broker (as an operator would) if needed.
func (w *world) topic(t *testing.T, topic string) {
	t.Helper()
	if err := w.b.CreateTopic(topic, w.queues); err != nil {
		t.Fatal(err)
	}
}

// start creates the subscribed topics, creates and starts a consumer
// reading them from the first offset (the tests often send first), waits
// for its first rebalance and shuts it down at cleanup. It logs how long
// Start took.
func start(t *testing.T, w *world, cfg Config) *Consumer {
	t.Helper()
	cfg.NameServers = []string{w.b.Addr()}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	if cfg.StartFrom == StartFromLast {
		cfg.StartFrom = StartFromFirst
	}
	for _, s := range cfg.Subscriptions {
		w.topic(t, s.Topic)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	begin := time.Now()
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("consumer %s (orderly=%v) Start took %v", cfg.Group, cfg.Orderly, time.Since(begin))
	// Wait for the first rebalance (a pull on every queue, the retry queue
	// included), so that a test ending early does not shut the client down
	// in the middle of it. Another member of the group may hold some
	// queues: count the group's.
	eventually(t, 10*time.Second, "the consumer's first rebalance", func() bool {
		for _, s := range cfg.Subscriptions {
			if w.b.PulledQueues(cfg.Group, s.Topic) < w.queues {
				return false
			}
		}
		return w.b.PulledQueues(cfg.Group, "%RETRY%"+cfg.Group) == 1
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = c.Shutdown(context.Background()) }) })
	return c
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}

// settled waits until the group has acknowledged everything the broker
// holds for it on topic (committed offsets at every queue's end, no retry
// pending): the event after which "nothing more happened" can be asserted.
func (w *world) settled(t *testing.T, group, topic string) {
	t.Helper()
	eventually(t, 20*time.Second, "group "+group+" to settle on "+topic, func() bool { return w.b.Settled(group, topic) })
}
