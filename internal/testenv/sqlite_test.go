package testenv

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

func TestOpenSQLitePragmas(t *testing.T) {
	ctx := context.Background()
	sqlDB, err := OpenSQLite(t).DB()
	if err != nil {
		t.Fatal(err)
	}
	// Pragmas apply per connection: check them on several connections at once.
	for i := range 3 {
		conn, err := sqlDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t.Logf("connection %d", i)
		CheckSQLitePragmas(t, conn)
	}
}

func TestSQLiteDSN(t *testing.T) {
	dsn := SQLiteDSN("/tmp/x.db")
	for _, part := range []string{
		"_pragma=busy_timeout(10000)", "_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)", "_pragma=foreign_keys(1)", "_txlock=immediate",
	} {
		if !strings.Contains(dsn, part) {
			t.Errorf("SQLiteDSN = %q, missing %s", dsn, part)
		}
	}
	if strings.Contains(dsn, "_time_format") {
		t.Errorf("SQLiteDSN = %q: _time_format makes the driver ignore _txlock", dsn)
	}
}

// _txlock=immediate: a transaction holds the write lock from BEGIN, before it
// writes anything, so a second writer is refused while it is open.
func TestSQLiteImmediateTransactions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock.db")
	first := open(t, "sqlite", sqlite.Open(SQLiteDSN(path)))
	if err := first.Exec("CREATE TABLE k (id INTEGER PRIMARY KEY)").Error; err != nil {
		t.Fatal(err)
	}
	// The second handle gives up at once instead of waiting 10 s for the lock
	// (a later _pragma overrides an earlier one).
	second, err := gorm.Open(sqlite.Open(SQLiteDSN(path)+"&_pragma=busy_timeout(0)"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := second.DB(); err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}

	tx := first.Begin()
	if tx.Error != nil {
		t.Fatal(tx.Error)
	}
	var n int
	if err := tx.Raw("SELECT COUNT(*) FROM k").Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	err = second.Exec("INSERT INTO k (id) VALUES (1)").Error
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("insert while a read-only transaction is open: err = %v; want database is locked (BEGIN IMMEDIATE)", err)
	}
	if err := tx.Rollback().Error; err != nil {
		t.Fatal(err)
	}
	if err := second.Exec("INSERT INTO k (id) VALUES (1)").Error; err != nil {
		t.Fatalf("insert after the transaction ended: %v", err)
	}
}

func TestSQLiteForeignKeysEnforced(t *testing.T) {
	db := OpenSQLite(t)
	for _, q := range []string{
		"CREATE TABLE parent (id INTEGER PRIMARY KEY)",
		"CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id))",
	} {
		if err := db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Exec("INSERT INTO child (id, parent_id) VALUES (1, 42)").Error; err == nil {
		t.Fatal("insert with a dangling foreign key succeeded; want a FOREIGN KEY constraint error")
	}
}
