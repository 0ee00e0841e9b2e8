package redisdedup_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
)

// The fast path in front of the transactional store on the embedded
// SQLite, with Redis down (here a port nothing listens on). Every delivery
// falls back to the database, which still deduplicates: the handler runs
// once, the duplicate is rejected by the database, and both fallbacks are
// counted. The fast path never runs a handler without the inner store's
// dedup.
func ExampleFastPath_Process_redisDown() {
	dir, err := os.MkdirTemp("", "idemq-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(filepath.Join(dir, "idemq.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	ctx := context.Background()
	store, err := sqldedup.New(db, sqldedup.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	client := redis.NewClient(&redis.Options{Addr: closedAddr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	defer client.Close()
	fast, err := redisdedup.NewFastPath(store, client, redisdedup.FastPathConfig{
		TTL:     dedup.Retention{}.WithDefaults().Keep, // as long as the SQL rows live
		Timeout: time.Second,
		Logger:  slog.New(slog.DiscardHandler), // the fallback warning, rate-limited
	})
	if err != nil {
		log.Fatal(err)
	}
	defer fast.Close(ctx)

	req := dedup.Request{Group: "billing", Key: "1790000000000000003"}
	for delivery := 1; delivery <= 2; delivery++ {
		res, err := fast.Process(ctx, req, func(ctx context.Context) error {
			fmt.Println("handler: charge order 123")
			return nil
		})
		fmt.Printf("delivery %d: %s (answered by Redis: %v), err=%v\n", delivery, res.Outcome, res.FastPath, err)
	}
	fmt.Println("fallbacks to the database:", fast.Stats().Fallbacks)
	// Output:
	// handler: charge order 123
	// delivery 1: processed (answered by Redis: false), err=<nil>
	// delivery 2: duplicate (answered by Redis: false), err=<nil>
	// fallbacks to the database: 2
}

// closedAddr returns a loopback address on which nothing listens.
func closedAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
