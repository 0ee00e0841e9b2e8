package dbopen

import (
	"os"
	"strings"
	"testing"
)

func TestOpenSQLiteTempAndCleanup(t *testing.T) {
	db, cleanup, err := Open("sqlite", "")
	if err != nil {
		t.Fatal(err)
	}
	var file string
	if err := db.Raw("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file).Error; err != nil || file == "" {
		t.Fatalf("database file %q, %v", file, err)
	}
	sqlDB, _ := db.DB()
	if n := sqlDB.Stats().MaxOpenConnections; n != 1 {
		t.Fatalf("SQLite pool allows %d connections, want 1", n)
	}
	cleanup()
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("temporary database %s left behind (%v)", file, err)
	}
}

func TestOpenRejectsBadInput(t *testing.T) {
	for _, tc := range [][2]string{{"oracle", "x"}, {"postgres", ""}, {"mysql", ""}, {"sqlite", "a.db?mode=ro"}} {
		if _, _, err := Open(tc[0], tc[1]); err == nil || !strings.Contains(err.Error(), tc[0]) {
			t.Errorf("Open(%q, %q) = %v", tc[0], tc[1], err)
		}
	}
}
