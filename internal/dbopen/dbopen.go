// Package dbopen opens the databases the examples and the benchmark
// command run on, configured as idemq recommends.
package dbopen

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup/sqldedup"
)

// Open opens dialect ("sqlite", "postgres" or "mysql") at dsn. An empty
// SQLite DSN means a new database file in a temporary directory, which the
// returned cleanup removes (cleanup also closes the database). SQLite gets one connection: it has one writer,
// and writers are better queued in Go than in SQLite's sleeping busy
// handler. A MySQL DSN gets multiStatements=true unless it says otherwise,
// so that sqldedup sends BEGIN with its dedup insert.
func Open(dialect, dsn string) (*gorm.DB, func(), error) {
	if (dialect == "postgres" || dialect == "mysql") && dsn == "" {
		return nil, nil, fmt.Errorf("%s needs a DSN", dialect)
	}
	removeDir := func() {}
	var d gorm.Dialector
	switch dialect {
	case "sqlite":
		if dsn == "" {
			dir, err := os.MkdirTemp("", "idemq-")
			if err != nil {
				return nil, nil, err
			}
			removeDir = func() { os.RemoveAll(dir) }
			dsn = sqldedup.SQLiteDSN(filepath.Join(dir, "idemq.db"))
		}
		d = sqlite.Open(dsn)
	case "postgres":
		d = postgres.Open(dsn)
	case "mysql":
		if !strings.Contains(dsn, "multiStatements") {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + "multiStatements=true"
		}
		d = mysql.Open(dsn)
	default:
		return nil, nil, fmt.Errorf("unknown database %q (want sqlite, postgres or mysql)", dialect)
	}
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true})
	if err != nil {
		removeDir()
		return nil, nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		removeDir()
		return nil, nil, err
	}
	sqlDB.SetMaxOpenConns(64)
	sqlDB.SetMaxIdleConns(64)
	if dialect == "sqlite" {
		sqlDB.SetMaxOpenConns(1)
	}
	return db, func() { sqlDB.Close(); removeDir() }, nil
}
