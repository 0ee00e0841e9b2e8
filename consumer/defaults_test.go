package consumer

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	rmq "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// sqliteStore returns a migrated transactional store on a fresh SQLite
// database.
func sqliteStore(t *testing.T) *sqldedup.Store {
	t.Helper()
	s, err := sqldedup.New(testenv.OpenSQLite(t), sqldedup.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer collects a logger's lines.
type syncBuffer = testenv.LogBuffer

func debugLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string { return testenv.DeadAddr(t) }

// Start refuses a store whose tables are missing, on every database, with
// the table named and "run Migrate"; it fails before it asks the name
// servers, so none is needed here.
func TestStartFailsOnUnmigratedStore(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			prefix := testenv.TablePrefix(t)
			store, err := sqldedup.New(d.Open(t), sqldedup.Config{TablePrefix: prefix, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			cfg := startConfig(deadAddr(t))
			cfg.WithoutDedup = false
			cfg.Store = store
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Shutdown(context.Background())
			err = c.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), "run Migrate (or idemq migrate)") ||
				!strings.Contains(err.Error(), "table "+prefix+"dedup does not exist") || !errors.Is(err, sqldedup.ErrSchemaNotReady) {
				t.Fatalf("Start = %v, want the missing table named and run Migrate", err)
			}
		})
	}
}

// Start refuses a fast path whose Redis does not answer, naming its
// address.
func TestStartFailsOnDeadRedis(t *testing.T) {
	addr := deadAddr(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	cfg := startConfig(deadAddr(t))
	cfg.WithoutDedup = false
	cfg.Store = sqliteStore(t)
	cfg.FastPath = rdb
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = c.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "redis at "+addr+" does not answer PING") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Start = %v, want the Redis address %s and the cause", err, addr)
	}
}

// A handler that blocks past the consumer's timeout is cut short, its
// error names the timeout, and its message is retried; the in-flight count
// shows it while it runs.
func TestHandlerTimeoutIsNamedAndRetried(t *testing.T) {
	var logs syncBuffer
	running := make(chan struct{})
	c := newTestConsumer(t, func(ctx context.Context, _ *idemq.Message) error {
		close(running)
		<-ctx.Done()
		return ctx.Err()
	}, func(cfg *Config) {
		cfg.CustomChain = nil
		cfg.Store = sqliteStore(t)
		cfg.Timeout = 200 * time.Millisecond
		cfg.Logger = debugLogger(&logs)
	})
	msgs := []*primitive.MessageExt{extWithID("101", 0)}
	ctx, _ := concurrentCtx(msgs)
	result := make(chan rmq.ConsumeResult, 1)
	go func() {
		r, _ := c.consume(ctx, msgs...)
		result <- r
	}()
	<-running
	if n := c.Stats().InFlight; n != 1 {
		t.Errorf("in flight %d while the handler runs, want 1", n)
	}
	if r := <-result; r != rmq.ConsumeRetryLater {
		t.Fatalf("result %v, want RetryLater", r)
	}
	if s := c.Stats(); s.Retried != 1 || s.Succeeded != 0 || s.InFlight != 0 {
		t.Fatalf("stats %+v, want one retry and nothing in flight", s)
	}
	if !strings.Contains(logs.String(), "handler timed out after 200ms") {
		t.Fatalf("logs do not name the timeout:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "slow handler") {
		t.Fatalf("no slow-handler warning:\n%s", logs.String())
	}
}

// Messages without the idemq ID are counted, and warned about once per
// topic; the outcomes are counted by kind.
func TestMessagesWithoutIDCountedAndWarnedOncePerTopic(t *testing.T) {
	var logs syncBuffer
	c := newTestConsumer(t, func(context.Context, *idemq.Message) error { return nil }, func(cfg *Config) {
		cfg.CustomChain = nil
		cfg.Store = sqliteStore(t)
		cfg.Logger = debugLogger(&logs)
		cfg.Subscriptions = []Subscription{{Topic: "orders"}, {Topic: "refunds"}}
	})
	foreign := func(topic, msgID string) *primitive.MessageExt {
		ext := newExt(topic, []byte("b-"+msgID), nil)
		ext.MsgId = msgID
		ext.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, msgID)
		return ext
	}
	for _, ext := range []*primitive.MessageExt{
		foreign("orders", "A1"), foreign("orders", "A2"), foreign("orders", "A1"), foreign("refunds", "B1"), extWithID("7", 0),
	} {
		ctx, _ := concurrentCtx([]*primitive.MessageExt{ext})
		if r, _ := c.consume(ctx, ext); r != rmq.ConsumeSuccess {
			t.Fatalf("result %v", r)
		}
	}
	s := c.Stats()
	if s.WithoutID != 4 || s.Processed != 4 || s.Duplicates != 1 {
		t.Fatalf("stats %+v, want 4 without ID, 4 processed, 1 duplicate", s)
	}
	if n := strings.Count(logs.String(), "message without an idemq message ID"); n != 2 {
		t.Fatalf("%d warnings, want one per topic (2):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "set Config.Dedup.KeyFunc to a business key") {
		t.Fatalf("the warning gives no advice:\n%s", logs.String())
	}
}
