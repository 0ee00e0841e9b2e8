package testenv

import (
	"regexp"
	"strings"
	"testing"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func TestTablePrefix(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		p := TablePrefix(t)
		if !prefixPattern.MatchString(p) || len(p) > 16 || p[len(p)-1] != '_' {
			t.Fatalf("TablePrefix = %q; want [a-z][a-z0-9_]*, at most 16 bytes, ending in _", p)
		}
		if seen[p] {
			t.Fatalf("TablePrefix returned %q twice", p)
		}
		seen[p] = true
	}
}

// Every database opens, has the dialect it claims, and isolates tables by
// prefix; DropTables removes them when the (sub)test ends.
func TestDatabases(t *testing.T) {
	dbs := Databases()
	if len(dbs) != 3 {
		t.Fatalf("Databases() lists %d databases, want sqlite, postgres and mysql", len(dbs))
	}
	for _, d := range dbs {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			if got := db.Dialector.Name(); got != d.Dialect {
				t.Fatalf("Dialector.Name() = %q, want %q", got, d.Dialect)
			}
			a, b := TablePrefix(t)+"item", TablePrefix(t)+"item"
			t.Run("isolated", func(t *testing.T) {
				DropTables(t, db, a, b)
				for _, table := range []string{a, b} {
					if err := db.Exec("CREATE TABLE " + table + " (id INTEGER PRIMARY KEY, note VARCHAR(20))").Error; err != nil {
						t.Fatal(err)
					}
				}
				if err := db.Exec("INSERT INTO "+a+" (id, note) VALUES (?, ?)", 1, "only in a").Error; err != nil {
					t.Fatal(err)
				}
				var na, nb int64
				db.Table(a).Count(&na)
				db.Table(b).Count(&nb)
				if na != 1 || nb != 0 {
					t.Fatalf("rows: %s has %d, %s has %d; want 1 and 0", a, na, b, nb)
				}
			})
			for _, table := range []string{a, b} {
				if db.Migrator().HasTable(table) {
					t.Errorf("table %s still exists after the subtest that called DropTables ended", table)
				}
			}
		})
	}
}

func TestKillPostgresBackend(t *testing.T) {
	db := OpenPostgres(t)
	admin := OpenPostgres(t)
	testKill(t, db, admin, func(tx *gorm.DB) func() {
		pid := PostgresBackendPID(t, tx)
		return func() {
			KillPostgresBackend(t, admin, pid)
			var n int64
			if err := admin.Raw("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ?", pid).Scan(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("backend %d still in pg_stat_activity after KillPostgresBackend", pid)
			}
		}
	})

	// A PID that is not a backend fails the test.
	f := runFake(t, func(tb testing.TB) { KillPostgresBackend(tb, admin, 1) })
	if f.fatal == "" {
		t.Error("KillPostgresBackend of PID 1 (not a backend) did not fail the test")
	}
}

// The test user kills its own connection without PROCESS, SUPER or
// CONNECTION ADMIN: scripts/test grants it none of those.
func TestKillMySQLConnection(t *testing.T) {
	db := OpenMySQL(t)
	admin := OpenMySQL(t)
	testKill(t, db, admin, func(tx *gorm.DB) func() {
		id := MySQLConnectionID(t, tx)
		return func() { KillMySQLConnection(t, admin, id) }
	})

	f := runFake(t, func(tb testing.TB) { KillMySQLConnection(tb, admin, 1<<40) })
	if f.fatal == "" {
		t.Error("KillMySQLConnection of a connection that does not exist did not fail the test")
	}
}

// testKill inserts a row in a transaction on db, kills that transaction's
// connection with the function prepare returns, and checks that the
// transaction is dead, the row was rolled back, and db's pool recovers.
func testKill(t *testing.T, db, admin *gorm.DB, prepare func(tx *gorm.DB) (kill func())) {
	t.Helper()
	table := TablePrefix(t) + "kill"
	DropTables(t, admin, table)
	if err := admin.Exec("CREATE TABLE " + table + " (id INTEGER PRIMARY KEY)").Error; err != nil {
		t.Fatal(err)
	}

	tx := db.Begin()
	if tx.Error != nil {
		t.Fatal(tx.Error)
	}
	if err := tx.Exec("INSERT INTO "+table+" (id) VALUES (?)", 1).Error; err != nil {
		t.Fatal(err)
	}
	kill := prepare(tx)
	kill()

	if err := tx.Exec("INSERT INTO "+table+" (id) VALUES (?)", 2).Error; err == nil {
		t.Error("statement on the killed connection succeeded")
	}
	if err := tx.Commit().Error; err == nil {
		t.Error("commit on the killed connection succeeded")
	}
	var n int64
	if err := admin.Table(table).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows committed by the killed transaction, want 0", n)
	}
	var one int
	if err := db.Raw("SELECT 1").Scan(&one).Error; err != nil || one != 1 {
		t.Errorf("pool after the kill: SELECT 1 = %d, %v; want a fresh connection", one, err)
	}
}

// A database reached through a Proxy fails while it is cut and works again
// after Restore.
func TestProxyDatabases(t *testing.T) {
	cases := []struct {
		name   string
		target func(t testing.TB) string
		open   func(t testing.TB, addr string) gorm.Dialector
	}{
		{
			name:   "postgres",
			target: PostgresAddr,
			open: func(t testing.TB, addr string) gorm.Dialector {
				return postgres.Open(PostgresDSNVia(t, addr))
			},
		},
		{
			name:   "mysql",
			target: MySQLAddr,
			open: func(t testing.TB, addr string) gorm.Dialector {
				return mysql.Open(MySQLDSNVia(t, addr))
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := NewProxy(t, c.target(t))
			db, err := gorm.Open(c.open(t, p.Addr()), &gorm.Config{Logger: logger.Discard})
			if err != nil {
				t.Fatal(err)
			}
			sqlDB, _ := db.DB()
			t.Cleanup(func() { _ = sqlDB.Close() })
			var one int
			if err := db.Raw("SELECT 1").Scan(&one).Error; err != nil || one != 1 {
				t.Fatalf("through the proxy: SELECT 1 = %d, %v", one, err)
			}
			p.Cut()
			if err := db.Raw("SELECT 1").Scan(&one).Error; err == nil {
				t.Fatal("SELECT 1 succeeded while the proxy was cut")
			}
			if p.Severed() == 0 {
				t.Error("Severed() = 0 after cutting an open connection")
			}
			p.Restore()
			one = 0
			if err := db.Raw("SELECT 1").Scan(&one).Error; err != nil || one != 1 {
				t.Fatalf("after Restore: SELECT 1 = %d, %v", one, err)
			}
		})
	}
}

// Each MySQL variant really has the DSN settings its name says: an update
// that changes nothing counts its row only with clientFoundRows, and two
// statements in one call pass only with multiStatements.
func TestMySQLVariants(t *testing.T) {
	for _, d := range MySQLVariants() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			if got := db.Dialector.Name(); got != "mysql" {
				t.Fatalf("Dialector.Name() = %q", got)
			}
			table := TablePrefix(t) + "v"
			DropTables(t, db, table)
			if err := db.Exec("CREATE TABLE " + table + " (id INTEGER PRIMARY KEY, v INTEGER)").Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("INSERT INTO " + table + " (id, v) VALUES (1, 1)").Error; err != nil {
				t.Fatal(err)
			}
			r := db.Exec("UPDATE " + table + " SET v = v WHERE id = 1")
			if r.Error != nil {
				t.Fatal(r.Error)
			}
			foundRows := strings.Contains(d.Name, "foundrows")
			if want := map[bool]int64{true: 1, false: 0}[foundRows]; r.RowsAffected != want {
				t.Errorf("no-op update affected %d rows, want %d (clientFoundRows=%v)", r.RowsAffected, want, foundRows)
			}
			multi := strings.Contains(d.Name, "multistatements")
			if err := db.Exec("DO 1; DO 2").Error; (err == nil) != multi {
				t.Errorf("two statements in one call: %v (multiStatements=%v)", err, multi)
			}
		})
	}
}
