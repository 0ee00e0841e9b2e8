package testenv

import (
	"path/filepath"
	"testing"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// SQLiteDSN returns the DSN idemq uses for a SQLite database file at path,
// for the pure-Go driver github.com/glebarez/sqlite (github.com/glebarez/go-sqlite):
//
//   - busy_timeout(10000): a writer waits up to 10 s for the lock instead of
//     failing at once with SQLITE_BUSY;
//   - journal_mode(WAL): readers do not block the writer;
//   - synchronous(FULL): a committed transaction survives power loss;
//   - foreign_keys(1): foreign keys are enforced;
//   - _txlock=immediate: every read-write transaction starts with BEGIN
//     IMMEDIATE, taking the write lock up front, so two transactions never
//     deadlock upgrading read locks (which busy_timeout cannot resolve).
//
// The driver ignores _txlock when _time_format is also given (it stops
// reading parameters there), so SQLiteDSN never sets _time_format. path is a
// plain file name, not a file: URI, and must not contain '?'.
func SQLiteDSN(path string) string {
	return path + "?" + sqliteParams
}

const sqliteParams = "_pragma=busy_timeout(10000)" +
	"&_pragma=journal_mode(WAL)" +
	"&_pragma=synchronous(FULL)" +
	"&_pragma=foreign_keys(1)" +
	"&_txlock=immediate"

// OpenSQLite opens a new, empty SQLite database in a file under t.TempDir()
// with the settings of [SQLiteDSN] and a silent logger. The database is
// closed when the test ends. It needs no server and never skips.
func OpenSQLite(t testing.TB) *gorm.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "idemq.db")
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
