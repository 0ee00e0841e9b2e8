package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeTB records Fatalf and Skipf instead of ending the real test, so the
// tests can check what a helper does to its caller. Both end the calling
// goroutine, as the real ones do.
type fakeTB struct {
	testing.TB
	fatal string
	skip  string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFake runs fn with a fakeTB wrapping t on its own goroutine and returns
// the fake once fn has returned or called Fatalf or Skipf.
func runFake(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	t.Helper()
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestLookupUnset(t *testing.T) {
	helpers := []struct {
		env    string
		server string
		get    func(testing.TB) string
	}{
		{EnvPostgresDSN, "PostgreSQL", PostgresDSN},
		{EnvMySQLDSN, "MariaDB", MySQLDSN},
		{EnvRedisAddr, "Redis", RedisAddr},
	}
	for _, h := range helpers {
		t.Run(h.env, func(t *testing.T) {
			t.Setenv(h.env, "")

			t.Setenv("CI", "")
			f := runFake(t, func(tb testing.TB) { h.get(tb) })
			want := h.env + " not set: run scripts/test to start " + h.server
			if f.skip != want || f.fatal != "" {
				t.Errorf("outside CI: skip %q, fatal %q; want skip %q", f.skip, f.fatal, want)
			}

			t.Setenv("CI", "true")
			f = runFake(t, func(tb testing.TB) { h.get(tb) })
			if f.skip != "" || !strings.Contains(f.fatal, h.env+" not set and CI=true") {
				t.Errorf("under CI: skip %q, fatal %q; want a fatal naming %s and CI", f.skip, f.fatal, h.env)
			}
		})
	}
}

func TestLookupSet(t *testing.T) {
	t.Setenv("CI", "true")
	t.Setenv(EnvRedisAddr, "127.0.0.1:1")
	var got string
	f := runFake(t, func(tb testing.TB) { got = RedisAddr(tb) })
	if f.skip != "" || f.fatal != "" || got != "127.0.0.1:1" {
		t.Errorf("RedisAddr = %q (skip %q, fatal %q); want the variable's value", got, f.skip, f.fatal)
	}
}

// A configured server that cannot be reached fails the test, also outside CI.
func TestOpenUnreachableFails(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv(EnvPostgresDSN, "host=127.0.0.1 port=1 user=x password=x dbname=x sslmode=disable connect_timeout=5")
	f := runFake(t, func(tb testing.TB) { OpenPostgres(tb) })
	if f.skip != "" || !strings.Contains(f.fatal, "open postgres") {
		t.Errorf("skip %q, fatal %q; want a fatal from opening postgres", f.skip, f.fatal)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond polled %d times, want 3", n)
	}
	// A condition that never holds fails the test it is given.
	f := runFake(t, func(tb testing.TB) {
		Eventually(tb, 30*time.Millisecond, "never", func() bool { return false })
	})
	if !strings.Contains(f.fatal, "never") {
		t.Fatalf("Eventually on a condition that never held: fatal = %q", f.fatal)
	}
}
