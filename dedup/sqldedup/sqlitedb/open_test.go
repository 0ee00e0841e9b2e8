package sqlitedb_test

import (
	"os"
	"path/filepath"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/internal/testenv"
)

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sqlitedb.Open(path, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	if n := sqlDB.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("MaxOpenConnections = %d, want 1", n)
	}
	testenv.CheckSQLitePragmas(t, sqlDB)
	if err := db.Exec("CREATE TABLE t (v INTEGER)").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO t (v) VALUES (42)").Error; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not created: %v", err)
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", "a.db?mode=ro", "file:a.db"} {
		if _, err := sqlitedb.Open(p, nil); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", p)
		}
	}
}
