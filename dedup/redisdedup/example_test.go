package redisdedup_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
)

// A fast path in front of the transactional SQL store: duplicates are
// answered from Redis, everything else (and everything while Redis is
// down) is decided by the database.
func ExampleNewFastPath() {
	db, err := sqlitedb.Open("idemq.db", nil)
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqldedup.New(db, sqldedup.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(context.Background()); err != nil {
		log.Fatal(err)
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	fast, err := redisdedup.NewFastPath(store, client, redisdedup.FastPathConfig{
		TTL: dedup.Retention{}.WithDefaults().Keep, // as long as the SQL rows live
	})
	if err != nil {
		log.Fatal(err)
	}
	res, err := fast.Process(context.Background(), dedup.Request{Group: "billing", Key: "order:123"},
		func(ctx context.Context) error {
			// Writes through dedup.Tx(ctx) commit with the dedup row.
			return dedup.Tx(ctx).Exec("UPDATE accounts SET paid = 1 WHERE order_id = ?", 123).Error
		})
	fmt.Println(res.Outcome, err)
}

// The Redis-only lease store, for an effect outside any database. Pass
// the message ID to the external API as its idempotency key: an effect
// can repeat if the process dies after it and before the key is done.
func ExampleNewLeaseStore() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	store, err := redisdedup.NewLeaseStore(client, redisdedup.LeaseConfig{Lease: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	req := dedup.Request{Group: "sms", Key: "welcome:42", MessageID: "1790000000000000000"}
	res, err := store.Process(context.Background(), req, func(ctx context.Context) error {
		// ctx is cancelled if the lease cannot be renewed.
		return sendSMS(ctx, req.MessageID)
	})
	switch {
	case err != nil:
		log.Printf("failed, redeliver: %v", err)
	case res.Outcome == dedup.Busy:
		log.Printf("another consumer holds it, retry in %s", res.RetryAfter)
	default:
		fmt.Println(res.Outcome)
	}
}

func sendSMS(context.Context, string) error { return nil }
