package redisdedup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

type fastPathBundle struct {
	client *redis.Client
	inner  *mapStore
	fp     *FastPath
	prefix string
}

func setupFastPath(t *testing.T, client *redis.Client, cfg FastPathConfig) *fastPathBundle {
	t.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = keyPrefix(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	if cfg.Timeout == 0 {
		// Generous: the test machine may be busy, and a timeout here would
		// turn a hit into a fallback. Tests of timeouts set their own.
		cfg.Timeout = 2 * time.Second
	}
	inner := newMapStore()
	fp, err := NewFastPath(inner, client, cfg)
	if err != nil {
		t.Fatalf("NewFastPath: %v", err)
	}
	return &fastPathBundle{client: client, inner: inner, fp: fp, prefix: cfg.KeyPrefix}
}

func (b *fastPathBundle) marker(t *testing.T, group, key string) (string, bool) {
	t.Helper()
	v, err := b.client.Get(context.Background(), redisKey(b.prefix, kindMarker, group, key)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatalf("GET marker: %v", err)
	}
	return v, true
}

// counter returns a Func that counts its runs.
func counter(n *atomic.Int64) dedup.Func {
	return func(context.Context) error {
		n.Add(1)
		return nil
	}
}

func mustProcess(t *testing.T, s dedup.Store, req dedup.Request, fn dedup.Func) dedup.Result {
	t.Helper()
	res, err := s.Process(context.Background(), req, fn)
	if err != nil {
		t.Fatalf("Process(%+v): %v", req, err)
	}
	return res
}

func TestFastPathProcessesOnceThenAnswersFromRedis(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	req := dedup.Request{Group: "g", Key: "order:1", Fingerprint: dedup.Fingerprint([]byte("a"))}
	var runs atomic.Int64

	res := mustProcess(t, b.fp, req, counter(&runs))
	if res.Outcome != dedup.Processed || res.FastPath {
		t.Fatalf("first delivery: got %+v, want Processed without FastPath", res)
	}
	if v, ok := b.marker(t, "g", "order:1"); !ok || v != req.Fingerprint {
		t.Fatalf("marker = %q (present %v), want the fingerprint %q", v, ok, req.Fingerprint)
	}

	res = mustProcess(t, b.fp, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || !res.FastPath || res.Mismatch || res.Dead {
		t.Fatalf("second delivery: got %+v, want Duplicate from the fast path", res)
	}
	if got := runs.Load(); got != 1 {
		t.Fatalf("fn ran %d times, want 1", got)
	}
	if got := b.inner.calls.Load(); got != 1 {
		t.Fatalf("inner store called %d times, want 1 (the duplicate must not reach it)", got)
	}
	st := b.fp.Stats()
	if st.Hits != 1 || st.Misses != 1 || st.MarkerWrites != 1 || st.Fallbacks != 0 || st.MarkerWriteErrors != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestFastPathMarkerTTL(t *testing.T) {
	const ttl = 90 * time.Minute
	b := setupFastPath(t, newRedis(t), FastPathConfig{TTL: ttl})
	var runs atomic.Int64
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k"}, counter(&runs))
	pttl, err := b.client.PTTL(context.Background(), redisKey(b.prefix, kindMarker, "g", "k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl <= 0 || pttl > ttl {
		t.Fatalf("marker PTTL = %s, want in (0, %s]", pttl, ttl)
	}
}

func TestFastPathMismatch(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	fpA, fpB := dedup.Fingerprint([]byte("a")), dedup.Fingerprint([]byte("b"))
	var runs atomic.Int64
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k", Fingerprint: fpA}, counter(&runs))

	tests := []struct {
		name        string
		fingerprint string
		mismatch    bool
	}{
		{"same payload", fpA, false},
		{"other payload", fpB, true},
		{"no fingerprint", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k", Fingerprint: tt.fingerprint}, counter(&runs))
			if res.Outcome != dedup.Duplicate || !res.FastPath || res.Mismatch != tt.mismatch {
				t.Fatalf("got %+v, want fast-path Duplicate with Mismatch=%v", res, tt.mismatch)
			}
		})
	}
	if runs.Load() != 1 {
		t.Fatalf("fn ran %d times, want 1", runs.Load())
	}

	// A marker written without a fingerprint never reports a mismatch.
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "nofp"}, counter(&runs))
	res := mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "nofp", Fingerprint: fpB}, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.Mismatch {
		t.Fatalf("got %+v, want Duplicate without Mismatch", res)
	}
}

func TestFastPathInnerMismatchIsNotCached(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	fpA, fpB := dedup.Fingerprint([]byte("a")), dedup.Fingerprint([]byte("b"))
	var runs atomic.Int64
	// The inner store knows the key (done with payload A) but Redis does
	// not: the marker was lost.
	mustProcess(t, b.inner, dedup.Request{Group: "g", Key: "k", Fingerprint: fpA}, counter(&runs))

	res := mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k", Fingerprint: fpB}, counter(&runs))
	if res.Outcome != dedup.Duplicate || !res.Mismatch || res.FastPath {
		t.Fatalf("got %+v, want the inner store's Duplicate with Mismatch", res)
	}
	if _, ok := b.marker(t, "g", "k"); ok {
		t.Fatal("a mismatching duplicate must not write a marker with its own fingerprint")
	}
	// A matching redelivery is a plain Duplicate, and writes no marker
	// either: only the delivery whose commit succeeded may.
	res = mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k", Fingerprint: fpA}, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.Mismatch {
		t.Fatalf("got %+v, want Duplicate without Mismatch", res)
	}
	if _, ok := b.marker(t, "g", "k"); ok {
		t.Fatal("a Duplicate answer wrote a marker")
	}
	if runs.Load() != 1 {
		t.Fatalf("fn ran %d times, want 1", runs.Load())
	}
}

// TestFastPathDuplicateAnswerWritesNoMarker: a key the inner store knows
// as done, reached through the fast path with no marker, is answered
// Duplicate by the inner store, and no marker is written. The row behind
// that answer may be one the database has shown but not yet made durable,
// so only the delivery whose own commit succeeded may write the marker.
func TestFastPathDuplicateAnswerWritesNoMarker(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	req := dedup.Request{Group: "g", Key: "k", Fingerprint: dedup.Fingerprint([]byte("a"))}
	var runs atomic.Int64
	mustProcess(t, b.inner, req, counter(&runs)) // another delivery's commit
	for range 3 {
		res := mustProcess(t, b.fp, req, counter(&runs))
		if res.Outcome != dedup.Duplicate || res.FastPath {
			t.Fatalf("got %+v, want the inner store's Duplicate", res)
		}
	}
	if _, ok := b.marker(t, "g", "k"); ok {
		t.Fatal("a Duplicate answer wrote a marker")
	}
	if st := b.fp.Stats(); st.MarkerWrites != 0 || st.Misses != 3 {
		t.Fatalf("stats = %+v, want 3 misses and no marker writes", st)
	}
	if runs.Load() != 1 || b.inner.calls.Load() != 4 {
		t.Fatalf("runs = %d, inner calls = %d; want 1 and 4", runs.Load(), b.inner.calls.Load())
	}
}

func TestFastPathFuncErrorIsReturnedAndNotCached(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	req := dedup.Request{Group: "g", Key: "k"}
	boom := idemq.Permanent(errors.New("boom"))
	_, err := b.fp.Process(context.Background(), req, func(context.Context) error { return boom })
	if err != boom {
		t.Fatalf("err = %v, want fn's error unchanged", err)
	}
	if _, ok := b.marker(t, "g", "k"); ok {
		t.Fatal("a failed delivery wrote a marker")
	}
	var runs atomic.Int64
	if res := mustProcess(t, b.fp, req, counter(&runs)); res.Outcome != dedup.Processed || runs.Load() != 1 {
		t.Fatalf("redelivery after failure: got %+v, runs %d; want Processed once", res, runs.Load())
	}
}

func TestFastPathConcurrentDeliveriesRunOnce(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	req := dedup.Request{Group: "g", Key: "concurrent"}
	outcomes := runConcurrently(t, b.fp, req, 32)
	if outcomes.runs != 1 {
		t.Fatalf("fn ran %d times, want exactly 1", outcomes.runs)
	}
	if outcomes.byOutcome[dedup.Processed] != 1 || outcomes.byOutcome[dedup.Duplicate] != 31 {
		t.Fatalf("outcomes = %v, want 1 processed and 31 duplicates", outcomes.byOutcome)
	}
}

// TestFastPathOverLeaseStore runs the fast path in front of the Redis
// lease store: exactly once still holds, and Busy is never cached.
func TestFastPathOverLeaseStore(t *testing.T) {
	client := newRedis(t)
	prefix := keyPrefix(t)
	ls, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: prefix, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := NewFastPath(ls, client, FastPathConfig{
		KeyPrefix: prefix,
		Logger:    quietLogger,
		Timeout:   2 * time.Second, // a busy test machine must not turn hits into fallbacks
	})
	if err != nil {
		t.Fatal(err)
	}

	out := runConcurrently(t, fp, dedup.Request{Group: "g", Key: "k32"}, 32)
	if out.runs != 1 {
		t.Fatalf("fn ran %d times, want exactly 1", out.runs)
	}
	if out.byOutcome[dedup.Processed] != 1 || out.byOutcome[dedup.Duplicate]+out.byOutcome[dedup.Busy] != 31 {
		t.Fatalf("outcomes = %v", out.byOutcome)
	}

	// Busy is not cached: hold the key, ask through the fast path.
	entered, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := ls.Process(context.Background(), dedup.Request{Group: "g", Key: "held"}, func(context.Context) error {
			close(entered)
			<-release
			return nil
		})
		done <- err
	}()
	<-entered
	var runs atomic.Int64
	res := mustProcess(t, fp, dedup.Request{Group: "g", Key: "held"}, counter(&runs))
	if res.Outcome != dedup.Busy || res.RetryAfter <= 0 {
		t.Fatalf("got %+v, want Busy with RetryAfter", res)
	}
	if n, _ := client.Exists(context.Background(), redisKey(prefix, kindMarker, "g", "held")).Result(); n != 0 {
		t.Fatal("Busy was cached as a done marker")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The holder went around the fast path, so no marker exists; the
	// lease store's Duplicate answer does not write one.
	for range 2 {
		res = mustProcess(t, fp, dedup.Request{Group: "g", Key: "held"}, counter(&runs))
		if res.Outcome != dedup.Duplicate || res.FastPath {
			t.Fatalf("got %+v, want the lease store's Duplicate", res)
		}
	}
	if runs.Load() != 0 {
		t.Fatalf("fn ran %d times, want 0", runs.Load())
	}
}

func TestFastPathDeadMarks(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	ctx := context.Background()
	var runs atomic.Int64
	req := dedup.Request{Group: "g", Key: "dead"}

	if err := b.fp.MarkDead(ctx, "g", "dead"); err != nil {
		t.Fatal(err)
	}
	res := mustProcess(t, b.fp, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || !res.Dead || res.FastPath {
		t.Fatalf("got %+v, want the inner store's dead Duplicate", res)
	}
	if _, ok := b.marker(t, "g", "dead"); ok {
		t.Fatal("a dead key was cached")
	}

	// A stale marker (written before the key died, or by a racing
	// delivery) must not swallow the redrive.
	if err := b.client.Set(ctx, redisKey(b.prefix, kindMarker, "g", "dead"), "", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.fp.ClearDead(ctx, "g", "dead"); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.marker(t, "g", "dead"); ok {
		t.Fatal("ClearDead left the marker")
	}
	res = mustProcess(t, b.fp, req, counter(&runs))
	if res.Outcome != dedup.Processed || runs.Load() != 1 {
		t.Fatalf("redrive: got %+v, runs %d; want Processed once", res, runs.Load())
	}

	// A done key stays done when marked dead.
	if err := b.fp.MarkDead(ctx, "g", "dead"); err != nil {
		t.Fatal(err)
	}
	if err := b.client.Del(ctx, redisKey(b.prefix, kindMarker, "g", "dead")).Err(); err != nil {
		t.Fatal(err)
	}
	res = mustProcess(t, b.fp, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.Dead {
		t.Fatalf("got %+v, want a plain Duplicate", res)
	}
}

func TestFastPathDeadMarksNeedInnerSupport(t *testing.T) {
	fp, err := NewFastPath(plainStore{newMapStore()}, newRedis(t), FastPathConfig{KeyPrefix: keyPrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := fp.MarkDead(context.Background(), "g", "k"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("MarkDead: err = %v, want errors.ErrUnsupported", err)
	}
	if err := fp.ClearDead(context.Background(), "g", "k"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ClearDead: err = %v, want errors.ErrUnsupported", err)
	}
}

func TestFastPathForget(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	var runs atomic.Int64
	req := dedup.Request{Group: "g", Key: "k"}
	mustProcess(t, b.fp, req, counter(&runs))
	if err := b.fp.Forget(context.Background(), "g", "k"); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.marker(t, "g", "k"); ok {
		t.Fatal("Forget left the marker")
	}
	res := mustProcess(t, b.fp, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.FastPath {
		t.Fatalf("got %+v, want the inner store's Duplicate", res)
	}
	if got := b.inner.calls.Load(); got != 2 {
		t.Fatalf("inner calls = %d, want 2", got)
	}
	if err := b.fp.Forget(context.Background(), "", "k"); !errors.Is(err, dedup.ErrEmptyGroup) {
		t.Fatalf("Forget with empty group: err = %v", err)
	}
}

func TestFastPathGroupsAndColonsAreSeparate(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	var runs atomic.Int64
	reqs := []dedup.Request{
		{Group: "a:b", Key: "c"},
		{Group: "a", Key: "b:c"},
		{Group: "a:", Key: "b:c"},
		{Group: "a", Key: ":b:c"},
		{Group: "other", Key: "b:c"},
	}
	for _, req := range reqs {
		if res := mustProcess(t, b.fp, req, counter(&runs)); res.Outcome != dedup.Processed {
			t.Fatalf("%+v: got %+v, want Processed (keys must not collide)", req, res)
		}
	}
	for _, req := range reqs {
		if res := mustProcess(t, b.fp, req, counter(&runs)); res.Outcome != dedup.Duplicate || !res.FastPath {
			t.Fatalf("%+v: got %+v, want a fast-path Duplicate", req, res)
		}
	}
	if runs.Load() != int64(len(reqs)) {
		t.Fatalf("fn ran %d times, want %d", runs.Load(), len(reqs))
	}
}

func TestFastPathFallsBackWhenRedisIsCut(t *testing.T) {
	p := newProxy(t, redisAddr(t))
	var hooked atomic.Int64
	b := setupFastPath(t, newClient(t, p.Addr()), FastPathConfig{
		RetryInterval: -1, // ask Redis on every delivery, so Restore is seen at once
		onFallback:    func(error) { hooked.Add(1) },
	})
	var runs atomic.Int64
	done := dedup.Request{Group: "g", Key: "before-cut"}
	mustProcess(t, b.fp, done, counter(&runs))
	if b.fp.Stats().MarkerWrites != 1 {
		t.Fatal("marker not written before the cut")
	}

	p.Cut()
	// Known key: Redis cannot answer, the inner store still says duplicate.
	res := mustProcess(t, b.fp, done, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.FastPath {
		t.Fatalf("got %+v, want the inner store's Duplicate", res)
	}
	// New key: processed once, then a duplicate, all through the inner store.
	fresh := dedup.Request{Group: "g", Key: "during-cut"}
	if res := mustProcess(t, b.fp, fresh, counter(&runs)); res.Outcome != dedup.Processed {
		t.Fatalf("got %+v, want Processed", res)
	}
	if res := mustProcess(t, b.fp, fresh, counter(&runs)); res.Outcome != dedup.Duplicate {
		t.Fatalf("got %+v, want Duplicate", res)
	}
	out := runConcurrently(t, b.fp, dedup.Request{Group: "g", Key: "concurrent-during-cut"}, 32)
	if out.runs != 1 {
		t.Fatalf("during the cut fn ran %d times for one key, want 1", out.runs)
	}
	if runs.Load() != 2 {
		t.Fatalf("fn ran %d times, want 2", runs.Load())
	}
	st := b.fp.Stats()
	if st.Fallbacks != 35 || hooked.Load() != 35 {
		t.Fatalf("fallbacks = %d, hook calls = %d; want 35 each", st.Fallbacks, hooked.Load())
	}
	if st.Hits != 0 {
		t.Fatalf("hits = %d during the cut", st.Hits)
	}

	p.Restore()
	after := dedup.Request{Group: "g", Key: "after-restore"}
	waitFor(t, "redis answering again", func() bool {
		return b.client.Ping(context.Background()).Err() == nil
	})
	mustProcess(t, b.fp, after, counter(&runs))
	res = mustProcess(t, b.fp, after, counter(&runs))
	if res.Outcome != dedup.Duplicate || !res.FastPath {
		t.Fatalf("after restore: got %+v, want a fast-path Duplicate", res)
	}
}

func TestFastPathLeavesFailedRedisAlone(t *testing.T) {
	p := newProxy(t, redisAddr(t))
	b := setupFastPath(t, newClient(t, p.Addr()), FastPathConfig{RetryInterval: time.Hour})
	var runs atomic.Int64
	p.Cut()
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k1"}, counter(&runs))
	p.Restore()
	// Redis is back, but the fast path leaves it alone for RetryInterval:
	// no marker is read or written.
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k2"}, counter(&runs))
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "k2"}, counter(&runs))
	st := b.fp.Stats()
	if st.Fallbacks != 3 || st.Misses != 0 || st.MarkerWrites != 0 {
		t.Fatalf("stats = %+v, want 3 fallbacks and no Redis traffic", st)
	}
	if runs.Load() != 2 {
		t.Fatalf("fn ran %d times, want 2", runs.Load())
	}
}

// TestFastPathMarkerWriteFailureIsNotAnError cuts Redis while fn runs,
// between the marker lookup and the marker write: the delivery still
// succeeds (the inner store recorded it), and the failed write is counted.
func TestFastPathMarkerWriteFailureIsNotAnError(t *testing.T) {
	p := newProxy(t, redisAddr(t))
	b := setupFastPath(t, newClient(t, p.Addr()), FastPathConfig{RetryInterval: -1})
	req := dedup.Request{Group: "g", Key: "k"}
	var runs atomic.Int64
	res, err := b.fp.Process(context.Background(), req, func(context.Context) error {
		runs.Add(1)
		p.Cut()
		return nil
	})
	if err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("got %+v, %v; want Processed despite the failed marker write", res, err)
	}
	if st := b.fp.Stats(); st.MarkerWriteErrors != 1 || st.MarkerWrites != 0 {
		t.Fatalf("stats = %+v, want one marker write error", st)
	}
	p.Restore()
	waitFor(t, "redis answering again", func() bool {
		return b.client.Ping(context.Background()).Err() == nil
	})
	// Without a marker every duplicate is answered by the inner store: a
	// Duplicate answer never writes one.
	for range 2 {
		res = mustProcess(t, b.fp, req, counter(&runs))
		if res.Outcome != dedup.Duplicate || res.FastPath {
			t.Fatalf("got %+v, want the inner store's Duplicate", res)
		}
	}
	if _, ok := b.marker(t, "g", "k"); ok {
		t.Fatal("a Duplicate answer wrote a marker")
	}
	if runs.Load() != 1 {
		t.Fatalf("fn ran %d times, want 1", runs.Load())
	}
}

// TestFastPathTimesOutOnHungRedis points the fast path at a server that
// accepts connections and never answers. The clients have no read timeout
// of their own, so without the fast path's call timeout Process would
// hang and the test would time out.
func TestFastPathTimesOutOnHungRedis(t *testing.T) {
	addr := blackHole(t)
	for _, ctxTimeout := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxTimeout), func(t *testing.T) {
			client := redis.NewClient(&redis.Options{
				Addr: addr, ReadTimeout: -1, WriteTimeout: -1, MaxRetries: -1,
				ContextTimeoutEnabled: ctxTimeout,
			})
			t.Cleanup(func() { _ = client.Close() })
			var (
				mu   sync.Mutex
				errs []error
			)
			b := setupFastPath(t, client, FastPathConfig{
				Timeout: 20 * time.Millisecond,
				onFallback: func(err error) {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				},
			})
			var runs atomic.Int64
			req := dedup.Request{Group: "g", Key: "k"}
			if res := mustProcess(t, b.fp, req, counter(&runs)); res.Outcome != dedup.Processed {
				t.Fatalf("got %+v, want Processed by the inner store", res)
			}
			if res := mustProcess(t, b.fp, req, counter(&runs)); res.Outcome != dedup.Duplicate {
				t.Fatalf("got %+v, want Duplicate from the inner store", res)
			}
			if runs.Load() != 1 {
				t.Fatalf("fn ran %d times, want 1", runs.Load())
			}
			if st := b.fp.Stats(); st.Fallbacks != 2 {
				t.Fatalf("stats = %+v, want 2 fallbacks", st)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(errs) != 2 || !errors.Is(errs[0], context.DeadlineExceeded) || !errors.Is(errs[1], errLeftAlone) {
				t.Fatalf("fallback errors = %v, want a timeout, then Redis left alone", errs)
			}
		})
	}
}

func TestFastPathCallerCancelled(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var runs atomic.Int64
	_, err := b.fp.Process(ctx, dedup.Request{Group: "g", Key: "k"}, counter(&runs))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if runs.Load() != 0 || b.fp.Stats().Fallbacks != 0 {
		t.Fatalf("runs = %d, stats = %+v: a cancelled delivery must neither run nor count as a fallback", runs.Load(), b.fp.Stats())
	}
}

func TestFastPathRejectsBadRequests(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	var runs atomic.Int64
	tests := []struct {
		name string
		req  dedup.Request
		fn   dedup.Func
		want error
	}{
		{"empty group", dedup.Request{Key: "k"}, counter(&runs), dedup.ErrEmptyGroup},
		{"empty key", dedup.Request{Group: "g"}, counter(&runs), idemq.ErrEmptyKey},
		{"long key", dedup.Request{Group: "g", Key: string(make([]byte, idemq.MaxKeyLen+1))}, counter(&runs), idemq.ErrKeyTooLong},
		{"NUL in key", dedup.Request{Group: "g", Key: "a\x00b"}, counter(&runs), idemq.ErrInvalidKey},
		{"nil func", dedup.Request{Group: "g", Key: "k"}, nil, dedup.ErrNilFunc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := b.fp.Process(context.Background(), tt.req, tt.fn); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if runs.Load() != 0 || b.inner.calls.Load() != 0 {
		t.Fatal("a bad request reached fn or the inner store")
	}
}

func TestNewFastPathConfigErrors(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = client.Close() })
	inner := newMapStore()
	var nilClient *redis.Client
	var nilInner *mapStore
	tests := []struct {
		name   string
		inner  dedup.Store
		client redis.UniversalClient
		cfg    FastPathConfig
	}{
		{"nil inner", nil, client, FastPathConfig{}},
		{"typed nil inner", nilInner, client, FastPathConfig{}},
		{"nil client", inner, nil, FastPathConfig{}},
		{"typed nil client", inner, nilClient, FastPathConfig{}},
		{"hash tag in prefix", inner, client, FastPathConfig{KeyPrefix: "{idemq}:"}},
		{"negative timeout", inner, client, FastPathConfig{Timeout: -time.Second}},
		{"negative TTL", inner, client, FastPathConfig{TTL: -time.Second}},
		{"negative LogEvery", inner, client, FastPathConfig{LogEvery: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fp, err := NewFastPath(tt.inner, tt.client, tt.cfg); err == nil {
				t.Fatalf("NewFastPath returned %v and no error", fp)
			}
		})
	}
	fp, err := NewFastPath(inner, client, FastPathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if fp.prefix != DefaultKeyPrefix || fp.ttl != 7*24*time.Hour || fp.call.timeout != 100*time.Millisecond {
		t.Fatalf("defaults: prefix %q ttl %s timeout %s", fp.prefix, fp.ttl, fp.call.timeout)
	}
}

func TestRedisKeyIsInjective(t *testing.T) {
	pairs := [][2]string{
		{"a:b", "c"}, {"a", "b:c"}, {"a:", "b:c"}, {"a", ":b:c"}, {"1:a", "b"}, {"1", "a:b"},
		{"a}:b", "c"}, {"a", "b}:c"}, {"ab", "c"}, {"a", "bc"},
	}
	seen := make(map[string][2]string)
	for _, p := range pairs {
		k := redisKey("p:", kindMarker, p[0], p[1])
		if prev, dup := seen[k]; dup {
			t.Fatalf("%q and %q map to the same key %q", prev, p, k)
		}
		seen[k] = p
	}
	if got := redisKey("idemq:", kindMarker, "grp", "order:1"); got != "idemq:d:3:grp:order:1" {
		t.Fatalf("key layout = %q", got)
	}
}

func TestLogLimiter(t *testing.T) {
	var lines atomic.Int64
	h := countingHandler{n: &lines}
	l := logLimiter{logger: slog.New(h), every: time.Hour}
	for range 5 {
		l.log(context.Background(), slog.LevelWarn, "x")
	}
	if lines.Load() != 1 || l.suppressed.Load() != 4 {
		t.Fatalf("lines = %d, suppressed = %d; want 1 and 4", lines.Load(), l.suppressed.Load())
	}
}

type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

type concurrentOutcomes struct {
	runs      int64
	byOutcome map[dedup.Outcome]int
}

// runConcurrently sends n deliveries of req at once and counts fn's runs
// and the outcomes. Errors fail the test.
func runConcurrently(t *testing.T, s dedup.Store, req dedup.Request, n int) concurrentOutcomes {
	t.Helper()
	var (
		runs  atomic.Int64
		start = make(chan struct{})
		wg    sync.WaitGroup
		mu    sync.Mutex
		out   = concurrentOutcomes{byOutcome: make(map[dedup.Outcome]int)}
		errs  []error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := s.Process(context.Background(), req, func(context.Context) error {
				runs.Add(1)
				time.Sleep(5 * time.Millisecond) // widen the race window
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out.byOutcome[res.Outcome]++
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d deliveries failed, first: %v", len(errs), errs[0])
	}
	out.runs = runs.Load()
	return out
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline. It waits for an event; it does not assert timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, what, cond)
}

// blackHole returns the address of a TCP server that accepts connections
// and never answers: a hung Redis.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}
