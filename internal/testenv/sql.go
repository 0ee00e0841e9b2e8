package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// OpenPostgres opens the test PostgreSQL database ([PostgresDSN]) with a
// silent logger; the pool is closed when the test ends. It skips (or fails
// under CI=true) when IDEMQ_POSTGRES_DSN is unset, and fails when the server
// cannot be reached.
func OpenPostgres(t testing.TB) *gorm.DB {
	t.Helper()
	return open(t, "postgres", postgres.Open(PostgresDSN(t)))
}

// OpenMySQL opens the test MySQL/MariaDB database ([MySQLDSN]) with a silent
// logger; the pool is closed when the test ends. It skips (or fails under
// CI=true) when IDEMQ_MYSQL_DSN is unset, and fails when the server cannot
// be reached.
func OpenMySQL(t testing.TB) *gorm.DB {
	t.Helper()
	return open(t, "mysql", mysql.Open(MySQLDSN(t)))
}

// DB names one database a test can run against.
type DB struct {
	// Name names the database in subtest names: "sqlite", "postgres", "mysql".
	Name string
	// Dialect is the gorm dialect name, equal to db.Dialector.Name() of the
	// opened database: "sqlite", "postgres" or "mysql".
	Dialect string
	// Open opens a database for the test as OpenSQLite, OpenPostgres or
	// OpenMySQL do, skipping when the server is not configured.
	Open func(t testing.TB) *gorm.DB
}

// Databases lists every database idemq supports, for tests that run once per
// database:
//
//	for _, d := range testenv.Databases() {
//		t.Run(d.Name, func(t *testing.T) { db := d.Open(t); ... })
//	}
//
// SQLite is always available; PostgreSQL and MySQL skip without their server
// (and fail under CI=true).
func Databases() []DB {
	return []DB{
		{Name: "sqlite", Dialect: "sqlite", Open: OpenSQLite},
		{Name: "postgres", Dialect: "postgres", Open: OpenPostgres},
		{Name: "mysql", Dialect: "mysql", Open: OpenMySQL},
	}
}

// TablePrefix returns a table-name prefix unique to this call, such as
// "t3f9a1c2d04b7_": lowercase hex after a leading 't', ending in '_', 14
// bytes long, valid unquoted in SQLite, PostgreSQL and MySQL. Tests that
// share one database put their tables under their own prefix and never see
// each other's tables, in this run or in earlier ones (the 48 random bits
// make a collision with a table left behind by an earlier run negligible).
//
// Tables are left in the throwaway test database; use [DropTables] to remove
// them when the test ends.
func TablePrefix(t testing.TB) string {
	t.Helper()
	return "t" + randomHex(t, 6) + "_"
}

// DropTables drops the named tables (if they exist) from db when the test
// ends. Call it after opening db: cleanups run last-registered-first, so the
// tables are dropped before testenv closes the pool. A failure to drop is
// reported as a test error.
func DropTables(t testing.TB, db *gorm.DB, names ...string) {
	t.Helper()
	if len(names) == 0 {
		return
	}
	tables := make([]any, len(names))
	for i, n := range names {
		tables[i] = n
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.WithContext(ctx).Migrator().DropTable(tables...); err != nil {
			t.Errorf("testenv: drop tables %v: %v", names, err)
		}
	})
}

// PostgresBackendPID returns the process ID of the PostgreSQL backend
// serving db, for [KillPostgresBackend]. db must be pinned to one connection
// (a transaction from db.Begin, or a pool limited to one connection);
// otherwise the next statement may run on another backend.
func PostgresBackendPID(t testing.TB, db *gorm.DB) int {
	t.Helper()
	var pid int
	if err := db.Raw("SELECT pg_backend_pid()").Scan(&pid).Error; err != nil {
		t.Fatalf("testenv: pg_backend_pid: %v", err)
	}
	return pid
}

// KillPostgresBackend terminates the PostgreSQL backend with process ID pid
// (see [PostgresBackendPID]) through admin, a different connection, and
// waits until it has exited: the client of that backend then sees its
// connection closed, and an open transaction there is rolled back. Use it to
// test "connection killed mid-transaction". admin needs to be the same role
// as the victim or a superuser. It fails the test if no such backend exists
// or it does not exit within 10 s.
func KillPostgresBackend(t testing.TB, admin *gorm.DB, pid int) {
	t.Helper()
	var terminated bool
	// The two-argument form (PostgreSQL 14+) waits for the backend to exit.
	err := admin.Raw("SELECT pg_terminate_backend(?, 10000)", pid).Scan(&terminated).Error
	if err != nil {
		t.Fatalf("testenv: pg_terminate_backend(%d): %v", pid, err)
	}
	if !terminated {
		t.Fatalf("testenv: pg_terminate_backend(%d) returned false: no such backend, or it did not exit within 10 s", pid)
	}
}

// MySQLConnectionID returns the server's ID for the MySQL/MariaDB
// connection serving db, for [KillMySQLConnection]. db must be pinned to one
// connection (a transaction from db.Begin, or a pool limited to one
// connection).
func MySQLConnectionID(t testing.TB, db *gorm.DB) int64 {
	t.Helper()
	var id int64
	if err := db.Raw("SELECT CONNECTION_ID()").Scan(&id).Error; err != nil {
		t.Fatalf("testenv: CONNECTION_ID(): %v", err)
	}
	return id
}

// KillMySQLConnection kills the MySQL/MariaDB connection with the given ID
// (see [MySQLConnectionID]) through admin, a different connection, and waits
// until the server has removed it from its process list: the client then
// sees its connection closed, and an open transaction there is rolled back.
// A user may kill its own connections without extra privileges; killing
// another user's needs CONNECTION ADMIN or SUPER. It fails the test if the
// kill is refused or the connection is still listed after 10 s.
func KillMySQLConnection(t testing.TB, admin *gorm.DB, id int64) {
	t.Helper()
	// KILL takes no placeholder in the binary protocol; id is an integer.
	if err := admin.Exec(fmt.Sprintf("KILL CONNECTION %d", id)).Error; err != nil {
		t.Fatalf("testenv: KILL CONNECTION %d: %v", id, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int64
		err := admin.Raw("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n).Error
		if err != nil {
			t.Fatalf("testenv: after KILL CONNECTION %d: read process list: %v", id, err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: connection %d still in the process list 10 s after KILL", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// randomHex returns 2n random lowercase hex digits.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// PostgresDSNVia returns the test PostgreSQL DSN ([PostgresDSN]) with its
// host and port replaced by addr (host:port), such as a [Proxy]'s address.
func PostgresDSNVia(t testing.TB, addr string) string {
	t.Helper()
	dsn := PostgresDSN(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("testenv: PostgresDSNVia(%q): %v", addr, err)
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("testenv: %s: %v", EnvPostgresDSN, err)
		}
		u.Host = addr
		return u.String()
	}
	// keyword=value form: a later keyword overrides an earlier one.
	return dsn + " host=" + host + " port=" + port
}

// MySQLDSNVia returns the test MySQL DSN ([MySQLDSN]) with its address
// replaced by addr (host:port, over TCP), such as a [Proxy]'s address.
func MySQLDSNVia(t testing.TB, addr string) string {
	t.Helper()
	cfg, err := mysqldriver.ParseDSN(MySQLDSN(t))
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvMySQLDSN, err)
	}
	cfg.Net = "tcp"
	cfg.Addr = addr
	return cfg.FormatDSN()
}

// PostgresAddr returns the host:port of the test PostgreSQL server
// ([PostgresDSN]), for instance as a [Proxy] target.
func PostgresAddr(t testing.TB) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(PostgresDSN(t))
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvPostgresDSN, err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// MySQLAddr returns the host:port of the test MySQL/MariaDB server
// ([MySQLDSN]), for instance as a [Proxy] target. The DSN must use TCP.
func MySQLAddr(t testing.TB) string {
	t.Helper()
	cfg, err := mysqldriver.ParseDSN(MySQLDSN(t))
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvMySQLDSN, err)
	}
	if cfg.Net != "tcp" {
		t.Fatalf("testenv: %s uses %q, not tcp", EnvMySQLDSN, cfg.Net)
	}
	return cfg.Addr
}

// MySQLVariants lists the test MySQL/MariaDB database ([MySQLDSN]) once
// per combination of the DSN settings that change what the server or the
// driver reports, for suites that must hold whatever the user's DSN says:
//
//	mysql-foundrows                  clientFoundRows=true (rows affected counts rows found)
//	mysql-multistatements            multiStatements=true
//	mysql-foundrows-multistatements  both
//
// The plain DSN itself is in [Databases]. Each variant's Dialect is "mysql".
func MySQLVariants() []DB {
	variant := func(name string, foundRows, multi bool) DB {
		return DB{Name: name, Dialect: "mysql", Open: func(t testing.TB) *gorm.DB {
			t.Helper()
			return open(t, name, mysql.Open(MySQLDSNWith(t, foundRows, multi)))
		}}
	}
	return []DB{
		variant("mysql-foundrows", true, false),
		variant("mysql-multistatements", false, true),
		variant("mysql-foundrows-multistatements", true, true),
	}
}

// MySQLDSNWith returns the test MySQL DSN ([MySQLDSN]) with
// clientFoundRows and multiStatements set as given.
func MySQLDSNWith(t testing.TB, clientFoundRows, multiStatements bool) string {
	t.Helper()
	cfg, err := mysqldriver.ParseDSN(MySQLDSN(t))
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvMySQLDSN, err)
	}
	cfg.ClientFoundRows = clientFoundRows
	cfg.MultiStatements = multiStatements
	return cfg.FormatDSN()
}
