package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/middleware"
)

// A consumer that grants a red packet once per paid order, whatever the
// broker redelivers. The chain runs on an embedded SQLite database.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "idemq-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(filepath.Join(dir, "shop.db"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	store, err := sqldedup.New(db, sqldedup.Config{})
	if err != nil {
		panic(err)
	}
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}
	if err := db.Exec("CREATE TABLE red_packets (order_id TEXT NOT NULL, amount INTEGER NOT NULL)").Error; err != nil {
		panic(err)
	}

	mws, err := middleware.Standard(middleware.StandardConfig{
		Store: store, // also the ledger of attempts and dead letters
		Dedup: middleware.DedupConfig{
			// One red packet per order, whichever message asks for it.
			KeyFunc: func(msg *idemq.Message) (string, error) {
				var o struct{ Order string }
				if err := json.Unmarshal(msg.Body, &o); err != nil || o.Order == "" {
					return "", fmt.Errorf("no order in body: %w", err)
				}
				return "order:" + o.Order + ":redpacket", nil
			},
		},
		Timeout: 30 * time.Second,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	grant := idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		var o struct{ Order string }
		_ = json.Unmarshal(msg.Body, &o)
		if o.Order == "999" {
			return idemq.Permanent(errors.New("order 999 was cancelled"))
		}
		// Written in the dedup transaction: it commits with the dedup row.
		return dedup.Tx(ctx).Exec("INSERT INTO red_packets VALUES (?, 100)", o.Order).Error
	})
	h, err := idemq.Chain(grant, mws...)
	if err != nil {
		panic(err)
	}

	paid := &idemq.Message{ID: "7100000000000000001", Group: "rewards", Topic: "orders", Body: []byte(`{"order":"42"}`), Attempt: 1}
	fmt.Println("first delivery:", h.Handle(ctx, paid.Clone()))
	// A transport learns what the chain did through TrackOutcome.
	dctx, outcomeOf := middleware.TrackOutcome(ctx)
	err = h.Handle(dctx, paid.Clone())
	fmt.Println("redelivery:", err, outcomeOf(err))

	cancelled := &idemq.Message{ID: "7100000000000000002", Group: "rewards", Topic: "orders", Body: []byte(`{"order":"999"}`), Attempt: 1}
	fmt.Println("cancelled order:", h.Handle(ctx, cancelled))

	var granted int64
	db.Raw("SELECT COUNT(*) FROM red_packets").Scan(&granted)
	dls, _ := store.DeadLetters(ctx, dedup.DeadLetterFilter{})
	fmt.Println("red packets granted:", granted)
	fmt.Printf("dead letters: %d (%s: %s)\n", len(dls), dls[0].Key, dls[0].Reason)
	// Output:
	// first delivery: <nil>
	// redelivery: <nil> duplicate
	// cancelled order: <nil>
	// red packets granted: 1
	// dead letters: 1 (order:999:redpacket: permanent: order 999 was cancelled)
}

// A transport asks the retry policy for a delay and rounds it up to one of
// RocketMQ's delay levels.
func ExampleRocketMQDelayLevel() {
	policy := middleware.RetryPolicy{Jitter: -1} // no jitter, for a stable output
	for _, attempt := range []int{1, 3, 6, 12} {
		d := policy.Next(attempt, errors.New("down"))
		fmt.Printf("attempt %d: wait %s, level %d\n", attempt, d, middleware.RocketMQDelayLevel(d))
	}
	busy := idemq.RetryAfter(40*time.Second, dedup.ErrBusy)
	fmt.Println("busy key: level", middleware.RocketMQDelayLevel(policy.Next(1, busy)))
	// Output:
	// attempt 1: wait 1s, level 1
	// attempt 3: wait 4s, level 2
	// attempt 6: wait 32s, level 5
	// attempt 12: wait 34m8s, level 17
	// busy key: level 5
}
