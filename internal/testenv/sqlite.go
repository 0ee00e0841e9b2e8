package testenv

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
)

// SQLiteDSN returns the DSN idemq recommends for a SQLite database file at
// path: sqldedup.SQLiteDSN, whose doc explains each setting.
func SQLiteDSN(path string) string { return sqldedup.SQLiteDSN(path) }

// OpenSQLite opens a new, empty SQLite database in a file under t.TempDir()
// with the settings of [SQLiteDSN] and a silent logger. The database is
// closed when the test ends. It needs no server and never skips.
func OpenSQLite(t testing.TB) *gorm.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "idemq.db")
	sqlitedb.KeepAllocatorWarm() // as sqlitedb.Open does
	return open(t, "sqlite", sqlite.Open(SQLiteDSN(path)))
}

// open opens dialector with a silent logger and closes the pool in t.Cleanup.
// A database that was configured but cannot be opened fails the test.
func open(t testing.TB, name string, dialector gorm.Dialector) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("testenv: open %s: %v", name, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("testenv: %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := sqlDB.Close(); err != nil {
			t.Errorf("testenv: close %s: %v", name, err)
		}
	})
	return db
}

// CheckSQLitePragmas fails t unless the connection q answers the pragmas
// that [SQLiteDSN] sets: WAL, synchronous=FULL, foreign keys on, a 10 s
// busy timeout.
func CheckSQLitePragmas(t testing.TB, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) {
	t.Helper()
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"busy_timeout": "10000",
	} {
		var got string
		if err := q.QueryRowContext(context.Background(), "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", pragma, err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %q, want %q", pragma, got, want)
		}
	}
}
