package sqldedup_test

import (
	"context"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

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
