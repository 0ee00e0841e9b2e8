package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/glebarez/sqlite"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The database tests run on SQLite always and on PostgreSQL, MariaDB and
// Redis when scripts/test provides them through IDEMQ_POSTGRES_DSN,
// IDEMQ_MYSQL_DSN and IDEMQ_REDIS_ADDR. Without them a test skips, except
// under CI=true, where a missing server is a failure.

type dbKind struct {
	name string
	// open returns a new connection pool, as a separate process would
	// have. All pools of one test share a database.
	open func(t *testing.T) *gorm.DB
}

func needEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; CI must provide the server (run scripts/test)", name)
		}
		t.Skipf("%s not set: this test needs a real server (scripts/test starts one)", name)
	}
	return v
}

// quietGorm returns a fresh config per Open: gorm.Open writes into it.
func quietGorm() *gorm.Config { return &gorm.Config{Logger: logger.Discard} }

func databases() []dbKind {
	return []dbKind{
		{name: "sqlite", open: sqliteOpener()},
		{name: "postgres", open: func(t *testing.T) *gorm.DB {
			dsn := needEnv(t, "IDEMQ_POSTGRES_DSN")
			db, err := gorm.Open(postgres.Open(dsn), quietGorm())
			if err != nil {
				t.Fatalf("open postgres: %v", err)
			}
			closeDB(t, db)
			return db
		}},
		{name: "mysql", open: func(t *testing.T) *gorm.DB {
			dsn := needEnv(t, "IDEMQ_MYSQL_DSN")
			db, err := gorm.Open(mysql.Open(dsn), quietGorm())
			if err != nil {
				t.Fatalf("open mysql: %v", err)
			}
			closeDB(t, db)
			return db
		}},
	}
}

// sqliteOpener returns an opener whose pools share one database file per
// test.
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
		db, err := gorm.Open(sqlite.Open(f+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"), quietGorm())
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		closeDB(t, db)
		return db
	}
}

func closeDB(t *testing.T, db *gorm.DB) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// tablePrefix returns a prefix unique to the test and drops its tables
// afterwards.
func tablePrefix(t *testing.T, db *gorm.DB) string {
	t.Helper()
	p := "t" + randHex(t, 5) + "_"
	t.Cleanup(func() {
		for _, tbl := range []string{"node_leases", "tx_records"} {
			_ = db.Exec("DROP TABLE IF EXISTS " + p + tbl).Error
		}
	})
	return p
}

func newRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	addr := needEnv(t, "IDEMQ_REDIS_ADDR")
	c := redis.NewClient(&redis.Options{Addr: addr})
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// keyPrefix returns a Redis key prefix unique to the test and deletes its
// keys afterwards.
func keyPrefix(t *testing.T, c redis.UniversalClient) string {
	t.Helper()
	p := "idemqtest:" + randHex(t, 5) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, p+"*").Result()
		if len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
	})
	return p
}
