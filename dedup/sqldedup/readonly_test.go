package sqldedup_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// readOnly opens, on each database, a schema migrated through an ordinary
// connection, and a second pool on the same database that may only read,
// as after a failover to a standby or a disk remounted read-only:
// PostgreSQL with default_transaction_read_only, MariaDB with tx_read_only
// (MySQL 8: transaction_read_only), SQLite with query_only.
func readOnly(t *testing.T, dialect string) (rw, ro *gorm.DB) {
	t.Helper()
	gormOpen := func(d gorm.Dialector) *gorm.DB {
		db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		t.Cleanup(func() { _ = sqlDB.Close() })
		return db
	}
	switch dialect {
	case "postgres":
		return testenv.OpenPostgres(t), gormOpen(postgres.Open(testenv.PostgresDSN(t) + " default_transaction_read_only=on"))
	case "mysql":
		dsn := testenv.MySQLDSN(t)
		return testenv.OpenMySQL(t), openMySQL(t, dsn+"&tx_read_only=1")
	}
	path := filepath.Join(t.TempDir(), "ro.db")
	return gormOpen(sqlite.Open(testenv.SQLiteDSN(path))), gormOpen(sqlite.Open(testenv.SQLiteDSN(path) + "&_pragma=query_only(1)"))
}

// TestReadOnlyDatabaseIsUnavailable: a database that refuses writes because
// it is read-only is an infrastructure failure (dedup.ErrUnavailable), not
// the message's: middleware must pause consumption instead of counting an
// attempt per message and burying every message that arrives meanwhile.
func TestReadOnlyDatabaseIsUnavailable(t *testing.T) {
	ctx := context.Background()
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			rw, ro := readOnly(t, d.Dialect)
			prefix := testenv.TablePrefix(t)
			newStore(t, rw, sqldedup.Config{TablePrefix: prefix})
			for _, mode := range []sqldedup.Mode{sqldedup.Transactional, sqldedup.Lease} {
				t.Run(mode.String(), func(t *testing.T) {
					s, err := sqldedup.New(ro, sqldedup.Config{Mode: mode, TablePrefix: prefix})
					if err != nil {
						t.Fatal(err)
					}
					ran := false
					_, err = s.Process(ctx, dedup.Request{Group: "g", Key: "k-" + mode.String()}, func(context.Context) error {
						ran = true
						return nil
					})
					if err == nil {
						t.Fatalf("Process on a read-only database succeeded (handler ran: %v): the case proves nothing", ran)
					}
					if !errors.Is(err, dedup.ErrUnavailable) {
						t.Fatalf("Process on a read-only database: %v; want an error wrapping dedup.ErrUnavailable", err)
					}
				})
			}
		})
	}
}
