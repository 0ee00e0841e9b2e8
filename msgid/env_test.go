package msgid

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/glebarez/sqlite"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The database tests run on SQLite always and on PostgreSQL, MariaDB and
// Redis when scripts/test provides them (internal/testenv reads
// IDEMQ_POSTGRES_DSN, IDEMQ_MYSQL_DSN and IDEMQ_REDIS_ADDR). Without them a
// test skips, except under CI=true, where a missing server is a failure.

type dbKind struct {
	name string
	// open returns a new connection pool, as a separate process would
	// have. All pools opened in one test share one database.
	open func(t *testing.T) *gorm.DB
	// via opens a pool that reaches the server through addr (a
	// testenv.Proxy), or is nil for SQLite.
	via func(t *testing.T, addr string) *gorm.DB
	// addr is the server's host:port, for a proxy.
	addr func(t *testing.T) string
}

// quietGorm returns a fresh config per Open: gorm.Open writes into it.
func quietGorm() *gorm.Config { return &gorm.Config{Logger: logger.Discard} }

func gormOpen(t *testing.T, d gorm.Dialector) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(d, quietGorm())
	if err != nil {
		t.Fatalf("open %s: %v", d.Name(), err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}

func databases() []dbKind {
	return []dbKind{
		{name: "sqlite", open: sqliteOpener()},
		{
			name: "postgres",
			open: func(t *testing.T) *gorm.DB { return testenv.OpenPostgres(t) },
			via: func(t *testing.T, addr string) *gorm.DB {
				return gormOpen(t, postgres.Open(testenv.PostgresDSNVia(t, addr)))
			},
			addr: func(t *testing.T) string { return testenv.PostgresAddr(t) },
		},
		{
			name: "mysql",
			open: func(t *testing.T) *gorm.DB { return testenv.OpenMySQL(t) },
			via: func(t *testing.T, addr string) *gorm.DB {
				return gormOpen(t, mysql.Open(testenv.MySQLDSNVia(t, addr)))
			},
			addr: func(t *testing.T) string { return testenv.MySQLAddr(t) },
		},
	}
}

// sqliteOpener returns an opener whose pools share one database file per
// test (testenv.OpenSQLite makes a new database on every call).
func sqliteOpener() func(t *testing.T) *gorm.DB {
	var mu sync.Mutex
	files := map[*testing.T]string{}
	return func(t *testing.T) *gorm.DB {
		mu.Lock()
		f, ok := files[t]
		if !ok {
			f = filepath.Join(t.TempDir(), "idemq.db")
			files[t] = f
		}
		mu.Unlock()
		return gormOpen(t, sqlite.Open(testenv.SQLiteDSN(f)))
	}
}

// tablePrefix returns a prefix unique to the test and drops its tables
// when the test ends.
func tablePrefix(t *testing.T, db *gorm.DB) string {
	t.Helper()
	p := testenv.TablePrefix(t)
	testenv.DropTables(t, db, p+"node_leases", p+"tx_records", p+"schema_migrations")
	return p
}

func newRedis(t *testing.T) *redis.Client { return testenv.NewRedis(t) }

func keyPrefix(t *testing.T) string { return testenv.KeyPrefix(t) }
