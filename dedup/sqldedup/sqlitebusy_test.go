package sqldedup_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
)

// TestSQLiteBusyIsAConflict: another process holds SQLite's write lock
// (here another pool on the same file, with BEGIN IMMEDIATE) longer than
// the busy timeout. The store's run fails with SQLITE_BUSY, is retried in
// place, and succeeds once the lock is released; held for good, the error
// wraps dedup.ErrConflict after the bounded retries, never a handler
// failure. On both begin paths.
func TestSQLiteBusyIsAConflict(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := map[bool]string{false: "one-call-begin", true: "plain-begin"}[plain]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "busy.db")
			// A short busy timeout, so that BUSY comes at once.
			dsn := path + "?_pragma=busy_timeout(20)&_pragma=journal_mode(WAL)&_txlock=immediate"
			openDB := func() *gorm.DB {
				db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{Logger: logger.Discard})
				if err != nil {
					t.Fatal(err)
				}
				sqlDB, _ := db.DB()
				sqlDB.SetMaxOpenConns(1)
				t.Cleanup(func() { sqlDB.Close() })
				return db
			}
			db, other := openDB(), openDB()
			cfg := sqldedup.Config{}
			if plain {
				cfg = sqldedup.WithoutFastBegin(cfg)
			}
			s := newStore(t, db, cfg)
			ctx := context.Background()

			// Held for good: a bounded number of runs, then ErrConflict.
			holder := other.Begin()
			if err := holder.Exec("INSERT INTO " + s.Table("attempts") + " (consumer_group, dedup_key, attempts, last_error, history, first_at, last_at) VALUES ('x', 'y', 0, '', '[]', 0, 0)").Error; err != nil {
				t.Fatal(err)
			}
			ran := false
			_, err := s.Process(ctx, dedup.Request{Group: "g", Key: "busy"}, func(context.Context) error { ran = true; return nil })
			if !errors.Is(err, dedup.ErrConflict) || !dedup.IsInfrastructure(err) {
				t.Fatalf("Process under a held write lock: %v, want an error wrapping dedup.ErrConflict", err)
			}
			if ran || s.ConflictRetries() == 0 {
				t.Fatalf("handler ran %v, %d runs retried; want no run and retries", ran, s.ConflictRetries())
			}

			// Released after the first BUSY: a retry succeeds.
			before := s.ConflictRetries()
			go func() {
				for s.ConflictRetries() == before {
					time.Sleep(time.Millisecond)
				}
				holder.Rollback()
			}()
			res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "busy"}, func(context.Context) error { return nil })
			if err != nil || res.Outcome != dedup.Processed {
				t.Fatalf("lock released during the retries: %s, %v; want processed", res.Outcome, err)
			}
		})
	}
}
