package sqldedup_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
)

// openExampleDB opens the embedded default, SQLite, in a fresh directory,
// with the dedup tables and a table for the handler's own effect. The
// returned func removes the directory.
func openExampleDB() (*gorm.DB, func()) {
	dir, err := os.MkdirTemp("", "idemq-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlitedb.Open(filepath.Join(dir, "idemq.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := db.Exec("CREATE TABLE coupons (order_id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)").Error; err != nil {
		log.Fatal(err)
	}
	return db, func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		os.RemoveAll(dir)
	}
}

// Transactional mode, the default: the dedup row is inserted in the
// transaction the handler writes through (dedup.Tx), so the second delivery
// of the same message is a duplicate and the handler does not run again.
// The coupon is granted once.
func ExampleStore_Process_transactional() {
	db, closeDB := openExampleDB()
	defer closeDB()
	ctx := context.Background()

	store, err := sqldedup.New(db, sqldedup.Config{}) // Mode: sqldedup.Transactional
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	req := dedup.Request{Group: "coupon-service", Key: "1790000000000000001"}
	grant := func(ctx context.Context) error {
		fmt.Println("handler: grant the coupon of order 123")
		// Writes through dedup.Tx(ctx) commit together with the dedup row.
		return dedup.Tx(ctx).Exec("INSERT INTO coupons (order_id, amount) VALUES (?, ?)", 123, 5).Error
	}
	for delivery := 1; delivery <= 2; delivery++ {
		res, err := store.Process(ctx, req, grant)
		fmt.Printf("delivery %d: %s, err=%v\n", delivery, res.Outcome, err)
	}

	var coupons int64
	db.Table("coupons").Count(&coupons)
	fmt.Println("coupons granted:", coupons)
	// Output:
	// handler: grant the coupon of order 123
	// delivery 1: processed, err=<nil>
	// delivery 2: duplicate, err=<nil>
	// coupons granted: 1
}

// Lease mode, for an effect outside the database (a payment API, an SMS):
// the key is claimed under a renewed, owner-fenced lease while the handler
// runs. A failed run releases the claim, so the redelivery runs the handler
// again; a run that succeeded marks the key done, so the next redelivery
// is a duplicate. Pass the message ID to the external API as its
// idempotency key: an effect can repeat if the process dies after it and
// before the key is marked done.
func ExampleStore_Process_lease() {
	db, closeDB := openExampleDB()
	defer closeDB()
	ctx := context.Background()

	store, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Lease})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	req := dedup.Request{Group: "sms-service", Key: "welcome:42", MessageID: "1790000000000000002"}
	calls := 0
	send := func(ctx context.Context) error {
		calls++
		if calls == 1 {
			return errors.New("sms gateway: 503")
		}
		fencing, _ := dedup.Fence(ctx)
		fmt.Printf("handler: send the SMS (idempotency key %s, fencing token > 0: %v)\n", req.MessageID, fencing > 0)
		return nil
	}
	for delivery := 1; delivery <= 3; delivery++ {
		res, err := store.Process(ctx, req, send)
		if err != nil {
			fmt.Printf("delivery %d: failed, the claim is released: %v\n", delivery, err)
			continue
		}
		fmt.Printf("delivery %d: %s\n", delivery, res.Outcome)
	}
	fmt.Println("handler calls:", calls)
	// Output:
	// delivery 1: failed, the claim is released: sms gateway: 503
	// handler: send the SMS (idempotency key 1790000000000000002, fencing token > 0: true)
	// delivery 2: processed
	// delivery 3: duplicate
	// handler calls: 2
}
