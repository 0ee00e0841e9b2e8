package redisdedup_test

import (
	"context"
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

	_ "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestFastPathCrashLosesNoMessage replays, on a private MariaDB that the
// test kills with SIGKILL, the crash that used to lose a message:
//
//  1. Delivery A commits its dedup row and its effect. Its consumer never
//     writes a marker: it dies, or its commit had not returned, when the
//     database dies.
//  2. Duplicate B goes through the fast path; the database, which already
//     shows A's row, answers Duplicate.
//  3. mariadbd is killed before A's commit reached the disk (the server
//     runs with innodb_flush_log_at_trx_commit=0, which widens to seconds
//     the window InnoDB always has between showing a commit and making it
//     durable), and restarted: A's row and effect are gone.
//  4. A is redelivered through the fast path. It must be processed: a
//     marker written from B's Duplicate answer would swallow it, and the
//     message would be lost.
func TestFastPathCrashLosesNoMessage(t *testing.T) {
	srv := startPrivateMariaDB(t)
	ctx := context.Background()
	client := testenv.NewRedis(t)
	keyPrefix := testenv.KeyPrefix(t)
	tablePrefix := testenv.TablePrefix(t)
	effects := tablePrefix + "effects"

	// The schema is made durable first; only the deliveries run with the
	// lax flush setting.
	db := srv.open(t)
	store := crashStore(t, db, tablePrefix)
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("CREATE TABLE " + effects + " (k VARCHAR(191) NOT NULL PRIMARY KEY) ENGINE=InnoDB").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 0").Error; err != nil {
		t.Fatal(err)
	}

	effect := func(key string) dedup.Func {
		return func(ctx context.Context) error {
			return dedup.Tx(ctx).Exec("INSERT INTO "+effects+" (k) VALUES (?)", key).Error
		}
	}
	req := dedup.Request{Group: "g", Key: "order:1", Fingerprint: dedup.Fingerprint([]byte("pay 10"))}

	// 1. A commits, and writes no marker.
	if res, err := store.Process(ctx, req, effect(req.Key)); err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("delivery A: %+v, %v", res, err)
	}
	// 2. B is a duplicate, answered by the database through the fast path.
	fp := newFastPath(t, store, client, keyPrefix)
	res, err := fp.Process(ctx, req, func(context.Context) error {
		t.Error("duplicate B ran the handler")
		return nil
	})
	if err != nil || res.Outcome != dedup.Duplicate || res.FastPath {
		t.Fatalf("duplicate B: %+v, %v; want the database's Duplicate", res, err)
	}

	// 3. The database dies and comes back without A's commit.
	srv.kill(t)
	srv.start(t)
	db2 := srv.open(t)
	var n int64
	if err := db2.Raw("SELECT COUNT(*) FROM "+store.Table("dedup")+" WHERE dedup_key = ?", req.Key).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("A's dedup row survived the crash: the test did not reproduce the lost commit and proved nothing")
	}

	// 4. A's redelivery, through a fast path on the same Redis keys.
	fp2 := newFastPath(t, crashStore(t, db2, tablePrefix), client, keyPrefix)
	ran := 0
	res, err = fp2.Process(ctx, req, func(ctx context.Context) error {
		ran++
		return effect(req.Key)(ctx)
	})
	if err != nil {
		t.Fatalf("redelivery of A: %v", err)
	}
	if res.Outcome != dedup.Processed || ran != 1 {
		t.Fatalf("redelivery of A: %+v, handler ran %d times; want Processed once (else the message is lost)", res, ran)
	}
	if err := db2.Raw("SELECT COUNT(*) FROM "+effects+" WHERE k = ?", req.Key).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d effects after the redelivery, want 1", n)
	}
}

func crashStore(t *testing.T, db *gorm.DB, prefix string) *sqldedup.Store {
	t.Helper()
	s, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Transactional, TablePrefix: prefix, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// privateMariaDB is a mariadbd of the test's own, in a temporary data
// directory with its own port and socket; the shared server is never
// touched.
type privateMariaDB struct {
	bin  string
	args []string // extra mariadbd arguments
	dir  string
	port int
	cmd  *exec.Cmd
	exit chan error
}

// startPrivateMariaDB initialises a data directory with mariadb-install-db
// and starts mariadbd on it. It skips when MariaDB is not installed, and
// fails under CI=true.
func startPrivateMariaDB(t *testing.T) *privateMariaDB {
	t.Helper()
	bin := lookBin("mariadbd", "/usr/sbin/mariadbd")
	install := lookBin("mariadb-install-db", "/usr/bin/mariadb-install-db")
	if bin == "" || install == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("mariadbd and mariadb-install-db are needed to crash a private MariaDB")
		}
		t.Skip("needs mariadbd and mariadb-install-db to crash a private MariaDB")
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
	s := &privateMariaDB{bin: bin, dir: dir, port: freePort(t)}
	s.args = userArgs
	s.start(t)
	t.Cleanup(func() { s.stop() })
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

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs mariadbd and waits until it answers.
func (s *privateMariaDB) start(t *testing.T) {
	t.Helper()
	args := append([]string{
		"--no-defaults",
		"--datadir=" + filepath.Join(s.dir, "data"),
		"--socket=" + filepath.Join(s.dir, "mariadb.sock"),
		"--pid-file=" + filepath.Join(s.dir, "mariadb.pid"),
		"--log-error=" + filepath.Join(s.dir, "error.log"),
		"--port=" + strconv.Itoa(s.port),
		"--bind-address=127.0.0.1",
		"--skip-grant-tables",
		"--skip-log-bin",
		"--innodb-buffer-pool-size=16M",
		"--innodb-log-file-size=8M",
		// The schema is set up durably; the test then lowers this to 0.
		"--innodb-flush-log-at-trx-commit=1",
		// With 0, the log is flushed only by this timer (the maximum).
		"--innodb-flush-log-at-timeout=2700",
	}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	s.exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(s.cmd, s.exit)

	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", s.port))
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

// kill ends mariadbd with SIGKILL, as a crash would, and waits for it.
func (s *privateMariaDB) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill mariadbd: %v", err)
	}
	<-s.exit
	s.cmd = nil
}

func (s *privateMariaDB) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// open returns a pool on the private server, closed when the test ends.
func (s *privateMariaDB) open(t *testing.T) *gorm.DB {
	t.Helper()
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/idemq?parseTime=true&interpolateParams=true&loc=UTC", s.port)
	db, err := gorm.Open(mysql.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}
