//go:build !race

// Not built under the race detector: rocketmq-client-go has data races of
// its own between its Shutdown and the requests in flight (see the package
// documentation), which -race may report in a run of this example. Plain
// `go test` runs it, and pkg.go.dev shows it.

package consumer_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/topics"
)

// A consumer that grants one red packet per paid order, on an embedded
// SQLite database and the in-process test broker, although the producer
// sends the same message twice.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	broker, err := rmqtest.New(rmqtest.Config{})
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	// The topic must exist before the consumer starts, as on a real
	// cluster; topics.Create is `mqadmin updateTopic`.
	if err := topics.Create(ctx, []string{broker.Addr()}, "orders", topics.Config{Queues: 4}); err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "idemq-consumer-example")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(filepath.Join(dir, "shop.db"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	store, _ := sqldedup.New(db, sqldedup.Config{Logger: quiet})
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}
	db.Exec("CREATE TABLE red_packets (order_id TEXT NOT NULL)")

	c, err := consumer.New(consumer.Config{
		NameServers:   []string{broker.Addr()},
		Group:         "rewards",
		Subscriptions: []consumer.Subscription{{Topic: "orders", Tags: "paid"}},
		Store:         store, // dedup, attempts and dead letters
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			// Written in the dedup transaction: it commits with the dedup row.
			return dedup.Tx(ctx).Exec("INSERT INTO red_packets VALUES (?)", string(msg.Body)).Error
		}),
		// Sent right after Start: read from the first offset, so nothing
		// sent before the group's first rebalance is skipped.
		StartFrom: consumer.StartFromFirst,
		Logger:    quiet,
	})
	if err != nil {
		panic(err)
	}
	if err := c.Start(context.Background()); err != nil {
		panic(err)
	}

	ids, _ := msgid.NewGenerator(msgid.FixedNode(1), msgid.GeneratorConfig{})
	p, err := producer.New(producer.Config{NameServers: []string{broker.Addr()}, IDSource: ids, Logger: quiet})
	if err != nil {
		panic(err)
	}
	if err := p.Start(ctx); err != nil {
		panic(err)
	}
	defer p.Shutdown(context.Background())
	paid := &idemq.Message{Topic: "orders", Tags: "paid", Body: []byte("order-42")}
	for range 2 { // the second send keeps the ID stamped by the first
		if _, err := p.SendSync(ctx, paid); err != nil {
			panic(err)
		}
	}

	for deadline := time.Now().Add(10 * time.Second); c.Stats().Succeeded < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Shutdown(ctx); err != nil {
		panic(err)
	}
	var granted int64
	db.Raw("SELECT COUNT(*) FROM red_packets").Scan(&granted)
	fmt.Println("deliveries acknowledged:", c.Stats().Succeeded)
	fmt.Println("duplicates:", c.Stats().Duplicates)
	fmt.Println("red packets granted:", granted)
	// Output:
	// deliveries acknowledged: 2
	// duplicates: 1
	// red packets granted: 1
}
