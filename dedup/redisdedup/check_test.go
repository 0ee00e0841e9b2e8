package redisdedup

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
)

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string { return testenv.DeadAddr(t) }

// Check of either Redis store names the address and the cause when Redis
// does not answer, and passes when it does.
func TestCheckPingsRedis(t *testing.T) {
	ctx := context.Background()
	good := newRedis(t)
	if err := NewLeaseStoreCheck(t, good).Check(ctx); err != nil {
		t.Fatalf("lease store Check on a live Redis: %v", err)
	}
	if err := setupFastPath(t, good, FastPathConfig{}).fp.Check(ctx); err != nil {
		t.Fatalf("fast path Check on a live Redis: %v", err)
	}

	for name, addr := range map[string]string{"refused": deadAddr(t), "hung": blackHole(t)} {
		t.Run(name, func(t *testing.T) {
			bad := newClient(t, addr)
			cause := map[string]string{"refused": "connection refused", "hung": "accepts TCP connections but does not answer"}[name]
			for store, c := range map[string]dedup.Checker{
				"fast path":   setupFastPath(t, bad, FastPathConfig{}).fp,
				"lease store": NewLeaseStoreCheck(t, bad),
			} {
				cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				err := c.Check(cctx)
				cancel()
				if err == nil || !strings.Contains(err.Error(), "redis at "+addr+" does not answer PING") ||
					!strings.Contains(err.Error(), cause) {
					t.Fatalf("%s: Check = %v, want the address %s and the cause %q", store, err, addr, cause)
				}
				t.Logf("%s: %v", store, err)
			}
		})
	}
}

// NewLeaseStoreCheck returns a lease store on client for Check tests.
func NewLeaseStoreCheck(t *testing.T, client *redis.Client) *LeaseStore {
	t.Helper()
	s, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: keyPrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer collects a logger's lines.
type syncBuffer = testenv.LogBuffer

// The fallback warning names the Redis address and the cause, also for a
// delivery that skipped Redis after a failure (whose own error only says
// Redis is being left alone).
func TestFallbackWarningNamesAddressAndCause(t *testing.T) {
	addr := deadAddr(t)
	var buf syncBuffer
	b := setupFastPath(t, newClient(t, addr), FastPathConfig{
		Logger:   slogText(&buf),
		LogEvery: time.Nanosecond,
	})
	var runs atomicCounter
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "a"}, runs.fn())
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "b"}, runs.fn()) // left alone
	if st := b.fp.Stats(); st.Fallbacks != 2 {
		t.Fatalf("stats %+v, want 2 fallbacks", st)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log = %q, want two fallback warnings", buf.String())
	}
	for i, l := range lines {
		if !strings.Contains(l, "redis="+addr) || !strings.Contains(l, "connection refused") {
			t.Fatalf("warning %d %q lacks the address %s or the cause", i, l, addr)
		}
	}
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) fn() dedup.Func { return counter(&c.n) }

func slogText(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
