package sqldedup_test

import (
	"context"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestDoneDuplicateNeedsNoTransaction, with Config.CheckDoneFirst, locks the dedup table against
// writes from another connection (SQLite: BEGIN IMMEDIATE; PostgreSQL:
// LOCK TABLE IN SHARE MODE; MySQL: LOCK TABLES READ) and delivers a
// duplicate of a done key: it is answered Duplicate (with the mismatch
// flag and the dead flag as the transactional path gives them) by one read,
// without waiting for the lock a transaction's insert would need. A fresh
// key still goes through the transaction and waits.
func TestDoneDuplicateNeedsNoTransaction(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s, err := sqldedup.New(db, sqldedup.Config{TablePrefix: testenv.TablePrefix(t), CheckDoneFirst: true})
			if err != nil {
				t.Fatal(err)
			}
			testenv.DropTables(t, db, s.Table("dedup"), s.Table("attempts"), s.Table("dead_letters"))
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			noop := func(context.Context) error { return nil }
			fpA := dedup.Fingerprint([]byte("a"))
			if res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "done", Fingerprint: fpA}, noop); err != nil || res.Outcome != dedup.Processed {
				t.Fatalf("first delivery: %+v, %v", res, err)
			}
			if err := s.MarkDead(ctx, "g", "dead"); err != nil {
				t.Fatal(err)
			}

			sqlDB, err := db.DB()
			if err != nil {
				t.Fatal(err)
			}
			conn, err := sqlDB.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			table := s.Table("dedup")
			lock, unlock := "BEGIN IMMEDIATE", "ROLLBACK"
			switch d.Dialect {
			case "postgres":
				lock = "BEGIN; LOCK TABLE " + table + " IN SHARE MODE"
			case "mysql":
				lock, unlock = "LOCK TABLES "+table+" READ", "UNLOCK TABLES"
			}
			if _, err := conn.ExecContext(ctx, lock); err != nil {
				t.Fatalf("%s: %v", lock, err)
			}
			locked := true
			defer func() {
				if locked {
					conn.ExecContext(ctx, unlock)
				}
			}()

			for _, c := range []struct {
				key, fp            string
				mismatch, deadFlag bool
			}{
				{"done", fpA, false, false},
				{"done", dedup.Fingerprint([]byte("b")), true, false},
				{"dead", "", false, true},
			} {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				res, err := s.Process(cctx, dedup.Request{Group: "g", Key: c.key, Fingerprint: c.fp}, func(context.Context) error {
					t.Errorf("fn ran for duplicate %q", c.key)
					return nil
				})
				cancel()
				if err != nil || res.Outcome != dedup.Duplicate || res.Mismatch != c.mismatch || res.Dead != c.deadFlag {
					t.Fatalf("duplicate of %q with the table locked: %+v, %v; want Duplicate (mismatch %v, dead %v)", c.key, res, err, c.mismatch, c.deadFlag)
				}
			}

			// A fresh key needs the transaction, and so the lock.
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			res, err := s.Process(cctx, dedup.Request{Group: "g", Key: "fresh"}, noop)
			cancel()
			if err == nil {
				t.Fatalf("fresh key with the table locked: %+v, want an error (it must wait for the lock)", res)
			}
			if _, err := conn.ExecContext(ctx, unlock); err != nil {
				t.Fatal(err)
			}
			locked = false
			if res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "fresh"}, noop); err != nil || res.Outcome != dedup.Processed {
				t.Fatalf("fresh key after unlock: %+v, %v", res, err)
			}
		})
	}
}
