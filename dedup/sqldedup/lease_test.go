package sqldedup_test

import (
	"context"
	"errors"
	"strings"
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

// TestMigrateAddsFenceColumn: a dedup table created before the fence
// column existed is upgraded by Migrate (twice: it is idempotent), keeps
// its rows, and serves lease mode with growing tokens.
func TestMigrateAddsFenceColumn(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			schema, err := sqldedup.Schema(d.Dialect, prefix)
			if err != nil {
				t.Fatal(err)
			}
			var old []string
			for _, l := range strings.Split(schema, "\n") {
				if !strings.HasPrefix(strings.TrimSpace(l), "fence ") {
					old = append(old, l)
				}
			}
			for _, stmt := range strings.Split(stripComments(strings.Join(old, "\n")), ";") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if err := db.Exec(stmt).Error; err != nil {
					t.Fatalf("old schema: %v", err)
				}
			}
			testenv.DropTables(t, db, prefix+"dedup", prefix+"attempts", prefix+"dead_letters")
			if err := db.Exec("INSERT INTO " + prefix + "dedup (consumer_group, dedup_key, status, created_at, updated_at) VALUES ('g', 'old', 2, 1, 1)").Error; err != nil {
				t.Fatal(err)
			}
			if db.Migrator().HasColumn(prefix+"dedup", "fence") {
				t.Fatal("the old schema already has the fence column")
			}
			s, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: prefix, LeaseDuration: 300 * time.Millisecond, RenewInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				if err := s.Migrate(context.Background()); err != nil {
					t.Fatalf("Migrate #%d: %v", i+1, err)
				}
			}
			if !db.Migrator().HasColumn(prefix+"dedup", "fence") {
				t.Fatal("Migrate did not add the fence column")
			}
			res, err := s.Process(context.Background(), dedup.Request{Group: "g", Key: "old"}, func(context.Context) error { return nil })
			if err != nil || res.Outcome != dedup.Duplicate {
				t.Fatalf("old row after the upgrade: %+v, %v; want Duplicate", res, err)
			}
			var fences []uint64
			failed := errors.New("fail")
			for i := 0; i < 2; i++ {
				_, err := s.Process(context.Background(), dedup.Request{Group: "g", Key: "new"}, func(ctx context.Context) error {
					f, _ := dedup.Fence(ctx)
					fences = append(fences, f)
					return failed
				})
				if err != failed {
					t.Fatalf("Process: %v", err)
				}
			}
			if len(fences) != 2 || fences[0] == 0 || fences[1] < fences[0] {
				t.Fatalf("tokens %v, want positive and not decreasing", fences)
			}
		})
	}
}
