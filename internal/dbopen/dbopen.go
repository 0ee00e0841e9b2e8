// Package dbopen opens the databases the examples and the benchmark
// command run on, configured as idemq recommends.
package dbopen

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
)

// Open opens dialect ("sqlite", "postgres" or "mysql") at dsn. SQLite goes
// through sqlitedb.Open: its DSN is a plain file path, and an empty one
// means a new database file in a temporary directory, which the returned
// cleanup removes. Cleanup also closes the database. A MySQL DSN gets multiStatements=true unless it says otherwise,
// so that sqldedup sends BEGIN with its dedup insert.
func Open(dialect, dsn string) (*gorm.DB, func(), error) {
	if (dialect == "postgres" || dialect == "mysql") && dsn == "" {
		return nil, nil, fmt.Errorf("%s needs a DSN", dialect)
	}
	cfg := &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true}
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
			dsn = filepath.Join(dir, "idemq.db")
		}
		db, err := sqlitedb.Open(dsn, cfg)
		if err != nil {
			removeDir()
			return nil, nil, err
		}
		return db, func() { closeDB(db); removeDir() }, nil
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
	db, err := gorm.Open(d, cfg)
	if err != nil {
		return nil, nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, nil, err
	}
	sqlDB.SetMaxOpenConns(64)
	sqlDB.SetMaxIdleConns(64)
	return db, func() { sqlDB.Close() }, nil
}

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.Close()
	}
}
