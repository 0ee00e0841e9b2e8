//go:build unix

package sqldedup_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/internal/testenv"
)

// pausedLease is the lease of TestLeasePausedProcess.
const pausedLease = time.Second

// pausedEffect is one row of the test's effects table: an external effect,
// with the fencing token of the owner that performed it and when.
type pausedEffect struct {
	Actor string
	Fence uint64
	At    int64
}

// TestLeasePausedProcess pauses a real process past its lease: a child
// process claims a key and, in its handler, is stopped (SIGSTOP) before
// its effect; a successor takes the key over and performs its effect; the
// child is continued (SIGCONT). The resumed child must find its context
// ended and not perform its effect after its successor's.
func TestLeasePausedProcess(t *testing.T) {
	if testenv.IsChild(t.Name()) {
		pausedChild(t)
		return
	}
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			var db *gorm.DB
			if d.Dialect == "sqlite" {
				// The child opens the same file.
				path := filepath.Join(t.TempDir(), "paused.db")
				d.Open = func(t testing.TB) *gorm.DB { return openSQLiteAt(t, path) }
				t.Setenv("IDEMQ_PAUSED_SQLITE", path)
			}
			db = d.Open(t)
			prefix := testenv.TablePrefix(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: prefix, LeaseDuration: pausedLease})
			effects := prefix + "effects"
			if err := db.Exec("CREATE TABLE " + effects + " (actor VARCHAR(32) NOT NULL, fence BIGINT NOT NULL, at BIGINT NOT NULL)").Error; err != nil {
				t.Fatal(err)
			}
			testenv.DropTables(t, db, effects, s.Table("dedup"), s.Table("attempts"), s.Table("dead_letters"))
			req := dedup.Request{Group: "g", Key: "paused"}

			child := testenv.StartChild(t, "TestLeasePausedProcess",
				"IDEMQ_PAUSED_DB="+d.Name, "IDEMQ_PAUSED_PREFIX="+prefix)
			zfence, err := strconv.ParseUint(child.Expect(t, "claimed", 60*time.Second), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			child.Signal(t, syscall.SIGSTOP)

			var sfence uint64
			deadline := time.Now().Add(30 * time.Second)
			for {
				res, err := s.Process(context.Background(), req, func(ctx context.Context) error {
					sfence, _ = dedup.Fence(ctx)
					return db.Exec("INSERT INTO "+effects+" (actor, fence, at) VALUES ('successor', ?, ?)", sfence, time.Now().UnixNano()).Error
				})
				if err != nil {
					t.Fatalf("successor: %v", err)
				}
				if res.Outcome == dedup.Processed {
					break
				}
				if res.Outcome != dedup.Busy || time.Now().After(deadline) {
					t.Fatalf("successor: %+v", res)
				}
				time.Sleep(min(max(res.RetryAfter, 10*time.Millisecond), 200*time.Millisecond))
			}
			child.Send(t, "go")
			child.Signal(t, syscall.SIGCONT)
			said := child.Expect(t, "", 60*time.Second)
			if err := child.Wait(t, 60*time.Second); err != nil {
				t.Fatalf("child: %v", err)
			}

			var rows []pausedEffect
			if err := db.Raw("SELECT actor, fence, at FROM " + effects + " ORDER BY at").Scan(&rows).Error; err != nil {
				t.Fatal(err)
			}
			t.Logf("paused owner's token %d, successor's %d; child: %s; effects %+v", zfence, sfence, said, rows)
			if sfence <= zfence {
				t.Errorf("successor's token %d is not above the paused owner's %d", sfence, zfence)
			}
			for i, e := range rows {
				if e.Actor == "zombie" {
					t.Errorf("the resumed owner performed its effect (token %d) after its successor's", e.Fence)
				}
				if i > 0 && e.Fence < rows[i-1].Fence {
					t.Errorf("effect with token %d after one with token %d", e.Fence, rows[i-1].Fence)
				}
			}
		})
	}
}

// openSQLiteAt opens the SQLite database at path, closed when t ends.
func openSQLiteAt(t testing.TB, path string) *gorm.DB {
	t.Helper()
	db, err := sqlitedb.Open(path, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return db
}

// pausedChild is the child of TestLeasePausedProcess: it claims the key,
// says so, waits for the parent's word (it is stopped meanwhile), and
// performs its effect only if its context is still live.
func pausedChild(t *testing.T) {
	var d testenv.DB
	for _, c := range testenv.Databases() {
		if c.Name == os.Getenv("IDEMQ_PAUSED_DB") {
			d = c
		}
	}
	if d.Open == nil {
		t.Fatalf("unknown database %q", os.Getenv("IDEMQ_PAUSED_DB"))
	}
	if d.Dialect == "sqlite" {
		d.Open = func(t testing.TB) *gorm.DB { return openSQLiteAt(t, os.Getenv("IDEMQ_PAUSED_SQLITE")) }
	}
	db := d.Open(t)
	prefix := os.Getenv("IDEMQ_PAUSED_PREFIX")
	s, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: prefix, LeaseDuration: pausedLease})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Process(context.Background(), dedup.Request{Group: "g", Key: "paused"}, func(ctx context.Context) error {
		fence, _ := dedup.Fence(ctx)
		testenv.ChildSay("claimed %d", fence)
		if _, err := testenv.ChildRead(); err != nil {
			return err
		}
		// Resumed: act only under a live lease.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped: %w", context.Cause(ctx))
		}
		return db.Exec("INSERT INTO "+prefix+"effects (actor, fence, at) VALUES ('zombie', ?, ?)", fence, time.Now().UnixNano()).Error
	})
	switch {
	case err == nil:
		testenv.ChildSay("acted and marked the key done")
	case errors.Is(err, dedup.ErrLeaseLost):
		testenv.ChildSay("ended without acting or marking: %v", err)
	default:
		t.Fatalf("child: %v", err)
	}
}
