package sqldedup_test

import (
	"context"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/deduptest"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// leased returns the conformance suite's Leased hook for a lease store on
// db's tables under prefix. On PostgreSQL and MySQL the store reaches the
// server through a testenv.Proxy, and Stall stalls the proxy. SQLite runs
// in the process, so Stall holds its write lock from another connection:
// the store's statements then wait, unanswered, as on a stalled server.
func leased(d testenv.DB, db *gorm.DB, prefix string) func(t *testing.T, lease time.Duration) deduptest.LeasedStore {
	return func(t *testing.T, lease time.Duration) deduptest.LeasedStore {
		t.Helper()
		cfg := sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: prefix, LeaseDuration: lease}
		switch d.Dialect {
		case "postgres", "mysql":
			var p *testenv.Proxy
			var via *gorm.DB
			if d.Dialect == "postgres" {
				p = testenv.NewProxy(t, testenv.PostgresAddr(t))
				var err error
				via, err = gorm.Open(postgres.Open(testenv.PostgresDSNVia(t, p.Addr())), &gorm.Config{Logger: logger.Discard})
				if err != nil {
					t.Fatalf("open postgres through a proxy: %v", err)
				}
				t.Cleanup(func() {
					if sqlDB, err := via.DB(); err == nil {
						sqlDB.Close()
					}
				})
			} else {
				p = testenv.NewProxy(t, testenv.MySQLAddr(t))
				via = openMySQL(t, testenv.MySQLDSNVia(t, p.Addr()))
			}
			return deduptest.LeasedStore{
				Store: newStore(t, via, cfg),
				Stall: func() func() { p.Stall(); return p.Resume },
			}
		default:
			s := newStore(t, db, cfg)
			return deduptest.LeasedStore{Store: s, Stall: func() func() { return sqliteWriteLock(t, db) }}
		}
	}
}

// sqliteWriteLock takes SQLite's write lock on a connection of its own and
// returns the func that gives it back.
func sqliteWriteLock(t *testing.T, db *gorm.DB) func() {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatalf("sqlite: dedicated connection: %v", err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		t.Fatalf("sqlite: take the write lock: %v", err)
	}
	return func() {
		if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
			t.Errorf("sqlite: give the write lock back: %v", err)
		}
		conn.Close()
	}
}

// TestLeaseClaimHandsTheStoredFence checks that the fencing token a
// lease-mode handler gets is the one stored with its claim, for a new key
// and for a takeover of an expired claim, on every database and MySQL DSN
// variant (MySQL returns a new claim's token as the insert ID, whatever
// clientFoundRows and multiStatements say), and that the same statement
// still answers "taken" for a key another owner holds.
func TestLeaseClaimHandsTheStoredFence(t *testing.T) {
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease, LeaseDuration: 10 * time.Second})
			stored := func(key string) uint64 {
				t.Helper()
				var f uint64
				if err := db.Raw("SELECT fence FROM "+s.Table("dedup")+" WHERE consumer_group = 'g' AND dedup_key = ?", key).Scan(&f).Error; err != nil {
					t.Fatal(err)
				}
				return f
			}
			run := func(key string) (dedup.Result, uint64, uint64, error) {
				var got, inRow uint64
				res, err := s.Process(ctx, dedup.Request{Group: "g", Key: key, MessageID: key}, func(ctx context.Context) error {
					got, _ = dedup.Fence(ctx)
					inRow = stored(key)
					return nil
				})
				return res, got, inRow, err
			}
			res, got, inRow, err := run("new")
			if err != nil || res.Outcome != dedup.Processed || got == 0 || got != inRow {
				t.Fatalf("new key: %v %v, handler's token %d, stored %d; want processed with the stored token", res.Outcome, err, got, inRow)
			}
			// A claim held by a live owner: answered Busy, its row untouched.
			if err := db.Exec("INSERT INTO "+s.Table("dedup")+" (consumer_group, dedup_key, status, owner, lease_until, fence, created_at, updated_at) VALUES ('g', 'held', 1, 'other', ?, 7, 1, 1), ('g', 'expired', 1, 'gone', 1, 9, 1, 1)",
				time.Now().Add(time.Hour).UnixMilli()).Error; err != nil {
				t.Fatal(err)
			}
			res, _, _, err = run("held")
			if err != nil || res.Outcome != dedup.Busy || stored("held") != 7 {
				t.Fatalf("held key: %v %v, stored token %d; want busy and the row untouched", res.Outcome, err, stored("held"))
			}
			res, got, inRow, err = run("expired")
			if err != nil || res.Outcome != dedup.Processed || got <= 9 || got != inRow {
				t.Fatalf("expired key: %v %v, handler's token %d, stored %d; want processed with a stored token above 9", res.Outcome, err, got, inRow)
			}
		})
	}
}
