package testenv

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// MariaDB is a mariadbd of the test's own, in a temporary data directory
// with its own port and socket, for tests that must crash a server or run
// it with settings the shared one does not have. The shared server is
// never touched.
type MariaDB struct {
	// Port is the TCP port the server listens on, on 127.0.0.1.
	Port int

	bin  string
	args []string // extra mariadbd arguments
	env  []string // extra environment of mariadbd
	dir  string
	cmd  *exec.Cmd
	exit chan error
}

// MariaDBOptions configures StartMariaDB.
type MariaDBOptions struct {
	// Env is added to mariadbd's environment, such as "TZ=Europe/Berlin"
	// for the server's SYSTEM time zone. Optional.
	Env []string
}

// StartMariaDB initialises a data directory with mariadb-install-db and
// starts mariadbd on it, with database "idemq" created and no passwords.
// The server is killed and its directory removed when the test ends. It
// skips when MariaDB is not installed, and fails under CI=true.
func StartMariaDB(t testing.TB, opts MariaDBOptions) *MariaDB {
	t.Helper()
	bin := lookBin("mariadbd", "/usr/sbin/mariadbd")
	install := lookBin("mariadb-install-db", "/usr/bin/mariadb-install-db")
	if bin == "" || install == "" {
		if InCI() {
			t.Fatal("testenv: mariadbd and mariadb-install-db are needed for a private MariaDB")
		}
		t.Skip("needs mariadbd and mariadb-install-db for a private MariaDB")
	}
	dir, err := os.MkdirTemp("", "idemq-mariadb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	var userArgs []string
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root: hand the directory to mysql.
		u, err := user.Lookup("mysql")
		if err != nil {
			t.Skipf("running as root and there is no mysql user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		userArgs = []string{"--user=mysql"}
	}
	out, err := exec.Command(install, append([]string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"),
		"--auth-root-authentication-method=normal", "--skip-test-db"}, userArgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	s := &MariaDB{bin: bin, dir: dir, Port: freePort(t), args: userArgs, env: opts.Env}
	s.Start(t)
	t.Cleanup(s.stop)
	return s
}

func lookBin(name, fallback string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs mariadbd (again, after Kill) and waits until it answers.
func (s *MariaDB) Start(t testing.TB) {
	t.Helper()
	args := append([]string{
		"--no-defaults",
		"--datadir=" + filepath.Join(s.dir, "data"),
		"--socket=" + filepath.Join(s.dir, "mariadb.sock"),
		"--pid-file=" + filepath.Join(s.dir, "mariadb.pid"),
		"--log-error=" + filepath.Join(s.dir, "error.log"),
		"--port=" + strconv.Itoa(s.Port),
		"--bind-address=127.0.0.1",
		"--skip-grant-tables",
		"--skip-log-bin",
		"--innodb-buffer-pool-size=16M",
		"--innodb-log-file-size=8M",
		// A test that needs lax durability lowers this to 0.
		"--innodb-flush-log-at-trx-commit=1",
		// With 0, the log is flushed only by this timer (the maximum).
		"--innodb-flush-log-at-timeout=2700",
	}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if len(s.env) > 0 {
		s.cmd.Env = append(os.Environ(), s.env...)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	s.exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(s.cmd, s.exit)

	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", s.Port))
		if err == nil {
			err = db.Ping()
			if err == nil {
				_, err = db.Exec("CREATE DATABASE IF NOT EXISTS idemq")
			}
			_ = db.Close()
		}
		if err == nil {
			return
		}
		select {
		case werr := <-s.exit:
			log, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
			t.Fatalf("mariadbd exited: %v\n%s", werr, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mariadbd did not answer within a minute: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill ends mariadbd with SIGKILL, as a crash would, and waits for it.
func (s *MariaDB) Kill(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill mariadbd: %v", err)
	}
	<-s.exit
	s.cmd = nil
}

func (s *MariaDB) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// DSN returns a DSN for database "idemq" on the server, with the test
// DSN's settings (parseTime, interpolateParams, loc=UTC) and params, if
// any, appended ("&"-joined, as go-sql-driver/mysql reads them: unknown
// names are session variables set on every connection).
func (s *MariaDB) DSN(params string) string {
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/idemq?parseTime=true&interpolateParams=true&loc=UTC", s.Port)
	if params != "" {
		dsn += "&" + params
	}
	return dsn
}

// Open returns a pool on the server (see DSN for params), closed when the
// test ends.
func (s *MariaDB) Open(t testing.TB, params string) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(mysql.Open(s.DSN(params)), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("testenv: open private MariaDB: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	// Connections of a server killed meanwhile may fail to close.
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}

// InRepeatedHour is a Unix time inside the hour that the end of daylight
// saving time repeats in Europe/Berlin: 2026-10-25 00:00:05 UTC, the first
// 02:00:05 CEST. A session clock set to it (the DSN's timestamp session
// variable) on a server started by StartDSTMariaDB reads local time an
// hour off from UTC in the one direction that breaks leases.
const InRepeatedHour = 1792886405

// StartDSTMariaDB starts a private MariaDB (StartMariaDB) whose SYSTEM time
// zone is Europe/Berlin, which observes daylight saving time: for tests
// that the database clock does not follow the session's time zone.
func StartDSTMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	return StartMariaDB(t, MariaDBOptions{Env: []string{"TZ=Europe/Berlin"}})
}
