package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/idemq/idemq/internal/dbopen"
)

// ownServer is a private database or Redis server of the run: its own data
// directory and port, in its own process group, so that it can be killed
// with everything it forked and restarted on the same data.
type ownServer struct {
	name  string
	port  int
	args  []string
	cred  *syscall.Credential
	log   string
	ready func(ctx context.Context) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *ownServer) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", s.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if err := s.ready(rctx); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting (log: %s)", s.name, s.log)
		case <-rctx.Done():
			return fmt.Errorf("%s not ready within 60 s (log: %s)", s.name, s.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL to the server's process group and waits for it.
func (s *ownServer) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	// Children that left the group (none expected) are not waited for.
}

// killAndRestart kills the server, as a crash would, and starts it again
// on the same data.
func (s *ownServer) killAndRestart() error {
	s.kill()
	time.Sleep(200 * time.Millisecond)
	return s.start(context.Background())
}

func (s *ownServer) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.kill()
	}
}

// ownServers are the private servers of -own-servers.
type ownServers struct {
	dir             string
	postgres, mysql *ownServer
	redis           *ownServer
}

func (o *ownServers) postgresDSN() string {
	if o.postgres == nil {
		return ""
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", o.postgres.port)
}

func (o *ownServers) mysqlDSN() string {
	if o.mysql == nil {
		return ""
	}
	return fmt.Sprintf("root@tcp(127.0.0.1:%d)/chaos?parseTime=true&interpolateParams=true&loc=UTC", o.mysql.port)
}

func (o *ownServers) redisAddr() string {
	if o.redis == nil {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", o.redis.port)
}

func (o *ownServers) forDB(db string) *ownServer {
	switch db {
	case "postgres":
		return o.postgres
	case "mysql", "mysql-cfr":
		return o.mysql
	}
	return nil
}

func (o *ownServers) close() {
	for _, s := range []*ownServer{o.redis, o.mysql, o.postgres} {
		if s != nil {
			s.stop()
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// lookPath finds a server binary in PATH or in the usual Debian places.
func lookPath(name string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// startOwnServers starts the servers the listed databases and modes need.
func startOwnServers(ctx context.Context, dir string, dbs, modes []string) (*ownServers, error) {
	o := &ownServers{dir: filepath.Join(dir, "servers")}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	needRedis := false
	for _, m := range modes {
		needRedis = needRedis || modeHasRedis(m)
	}
	var err error
	for _, db := range dbs {
		switch {
		case db == "postgres" && o.postgres == nil:
			o.postgres, err = startPostgres(ctx, o.dir)
		case (db == "mysql" || db == "mysql-cfr") && o.mysql == nil:
			o.mysql, err = startMariaDB(ctx, o.dir)
		}
		if err != nil {
			return o, err
		}
	}
	if needRedis {
		if o.redis, err = startRedis(ctx, o.dir); err != nil {
			return o, err
		}
	}
	return o, nil
}

// asUser returns the credential of name when running as root, so that a
// server that refuses root (PostgreSQL) runs as its own user.
func asUser(name string) (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, os.Getuid(), os.Getgid(), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("running as root and no %s user: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

func startPostgres(ctx context.Context, root string) (*ownServer, error) {
	binDirs := []string{"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"}
	initdb, err := lookPath("initdb", binDirs...)
	if err != nil {
		return nil, err
	}
	postgres := filepath.Join(filepath.Dir(initdb), "postgres")
	cred, uid, gid, err := asUser("postgres")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(root, "postgres")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chown(data, uid, gid); err != nil {
		return nil, err
	}
	// The parent directories must be enterable by the server's user.
	for d := root; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(d, fi.Mode().Perm()|0o011)
		}
	}
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &ownServer{
		name: "postgres", port: port, cred: cred, log: filepath.Join(root, "postgres.log"),
		args: []string{postgres, "-D", data, "-p", strconv.Itoa(port), "-k", data,
			"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=on"},
	}
	if cred != nil {
		_ = os.WriteFile(s.log, nil, 0o644)
		_ = os.Chown(s.log, uid, gid)
	}
	s.ready = pingSQL("postgres", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=2", port))
	return s, s.start(ctx)
}

func startMariaDB(ctx context.Context, root string) (*ownServer, error) {
	mariadbd, err := lookPath("mariadbd", "/usr/sbin")
	if err != nil {
		if mariadbd, err = lookPath("mysqld", "/usr/sbin"); err != nil {
			return nil, err
		}
	}
	install, err := lookPath("mariadb-install-db", "/usr/bin")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(root, "mariadb")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, install, "--no-defaults", "--datadir="+data, "--user="+u.Username,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &ownServer{
		name: "mariadb", port: port, log: filepath.Join(root, "mariadb.log"),
		args: []string{mariadbd, "--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1", "--socket=" + filepath.Join(data, "mysqld.sock"),
			"--user=" + u.Username, "--skip-grant-tables", "--innodb-flush-log-at-trx-commit=1",
			"--max-connections=300", "--log-error=" + filepath.Join(root, "mariadb.err")},
	}
	s.ready = func(ctx context.Context) error {
		db, closeDB, err := dbopen.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/?timeout=2s", port))
		if err != nil {
			return err
		}
		defer closeDB()
		return db.WithContext(ctx).Exec("CREATE DATABASE IF NOT EXISTS chaos").Error
	}
	return s, s.start(ctx)
}

func startRedis(ctx context.Context, root string) (*ownServer, error) {
	bin, err := lookPath("redis-server", "/usr/bin")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(root, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	s := &ownServer{
		name: "redis", port: port, log: filepath.Join(root, "redis.log"),
		args: []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
			"--save", "", "--appendonly", "no", "--daemonize", "no"},
	}
	s.ready = func(ctx context.Context) error {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", s.addr())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 7)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if string(buf[:5]) != "+PONG" {
			return errors.New("no PONG")
		}
		return nil
	}
	return s, s.start(ctx)
}

func (s *ownServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func pingSQL(dialect, dsn string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		db, closeDB, err := dbopen.Open(dialect, dsn)
		if err != nil {
			return err
		}
		defer closeDB()
		return db.WithContext(ctx).Exec("SELECT 1").Error
	}
}
