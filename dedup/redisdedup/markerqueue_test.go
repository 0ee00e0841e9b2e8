package redisdedup_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// gateHook holds every pipeline and SET (the marker writes) until its
// gate is closed; the marker lookups pass.
type gateHook struct{ gate chan struct{} }

func (h gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "set" {
			select {
			case <-h.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return next(ctx, cmd)
	}
}
func (h gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		// A new connection's handshake is a pipeline too: let it pass.
		if len(cmds) > 0 && cmds[0].Name() == "set" {
			select {
			case <-h.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return next(ctx, cmds)
	}
}

// gatedFastPath returns a fast path with background marker writes whose
// writes wait for the returned release function.
func gatedFastPath(t *testing.T, inner dedup.Store, prefix string, queue, batch int) (*redisdedup.FastPath, func()) {
	t.Helper()
	client := testenv.NewRedis(t)
	gate := make(chan struct{})
	client.AddHook(gateHook{gate: gate})
	fp, err := redisdedup.NewFastPath(inner, client, redisdedup.FastPathConfig{
		KeyPrefix:     prefix,
		Logger:        quiet,
		Timeout:       10 * time.Minute, // the gate, not a timeout, decides when writes happen
		RetryInterval: -1,
		MarkerQueue:   queue,
		MarkerBatch:   batch,
	})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() {
		release()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = fp.Close(ctx)
	})
	return fp, release
}

// TestFastPathQueuedMarkerLostInCrash: a delivery commits through a fast
// path with background marker writes, and its process dies with the
// marker still queued. The duplicate, through another consumer's fast
// path, misses Redis, is answered Duplicate by the database (fn does not
// run again), and writes no marker. When the queue is written instead
// (an orderly Close), the duplicate is answered from Redis.
func TestFastPathQueuedMarkerLostInCrash(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			inner := sqlStore(t, d.Open(t), sqldedup.Transactional)
			client := testenv.NewRedis(t)
			prefix := testenv.KeyPrefix(t)
			dying, release := gatedFastPath(t, inner, prefix, 16, 8)
			runs := 0
			fn := func(context.Context) error { runs++; return nil }

			req := dedup.Request{Group: "g", Key: "k", Fingerprint: dedup.Fingerprint([]byte("a"))}
			if res, err := dying.Process(ctx, req, fn); err != nil || res.Outcome != dedup.Processed {
				t.Fatalf("first delivery: %+v, %v", res, err)
			}
			// The commit returned; the marker waits in the queue.
			if n := markerCount(t, client, prefix); n != 0 {
				t.Fatalf("%d markers while the write is held, want 0", n)
			}

			// The process is gone; another consumer gets the duplicate.
			other := newFastPath(t, inner, client, prefix)
			for range 2 {
				res, err := other.Process(ctx, req, fn)
				if err != nil || res.Outcome != dedup.Duplicate || res.FastPath {
					t.Fatalf("duplicate: %+v, %v; want the database's Duplicate", res, err)
				}
			}
			if runs != 1 {
				t.Fatalf("fn ran %d times, want 1", runs)
			}
			if n := markerCount(t, client, prefix); n != 0 {
				t.Fatalf("%d markers after Duplicate answers, want 0", n)
			}

			// Had the process lived to Close, the marker would be written.
			release()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := dying.Close(cctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if st := dying.Stats(); st.MarkerWrites != 1 || st.MarkersDropped != 0 || st.MarkerWriteErrors != 0 {
				t.Fatalf("stats = %+v, want 1 marker written", st)
			}
			if res, err := other.Process(ctx, req, fn); err != nil || res.Outcome != dedup.Duplicate || !res.FastPath {
				t.Fatalf("duplicate after Close: %+v, %v; want a fast-path Duplicate", res, err)
			}
		})
	}
}

// TestFastPathBackgroundMarkersAreWrittenByClose processes fresh keys from
// several goroutines with background marker writes; Close writes every
// queued marker, and every duplicate is then answered from Redis.
func TestFastPathBackgroundMarkersAreWrittenByClose(t *testing.T) {
	ctx := context.Background()
	inner := sqlStore(t, testenv.OpenSQLite(t), sqldedup.Transactional)
	client := testenv.NewRedis(t)
	prefix := testenv.KeyPrefix(t)
	fp, release := gatedFastPath(t, inner, prefix, 1000, 16)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				res, err := fp.Process(ctx, dedup.Request{Group: "g", Key: fmt.Sprint("k", i)}, func(context.Context) error { return nil })
				if err == nil && res.Outcome != dedup.Processed {
					err = fmt.Errorf("key %d answered %s", i, res.Outcome)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := markerCount(t, client, prefix); m != 0 {
		t.Fatalf("%d markers before the writes were let through, want 0", m)
	}
	release()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := fp.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if m := markerCount(t, client, prefix); m != n {
		t.Fatalf("%d markers after Close, want %d", m, n)
	}
	if st := fp.Stats(); st.MarkerWrites != n || st.MarkersDropped != 0 {
		t.Fatalf("stats = %+v, want %d marker writes", st, n)
	}
	// After Close, markers are written before Process returns.
	if res, err := fp.Process(ctx, dedup.Request{Group: "g", Key: "late"}, func(context.Context) error { return nil }); err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("delivery after Close: %+v, %v", res, err)
	}
	if m := markerCount(t, client, prefix); m != n+1 {
		t.Fatalf("%d markers after a delivery past Close, want %d", m, n+1)
	}
	for i := 0; i < n; i++ {
		res, err := fp.Process(ctx, dedup.Request{Group: "g", Key: fmt.Sprint("k", i)}, func(context.Context) error {
			return fmt.Errorf("key %d ran twice", i)
		})
		if err != nil || !res.FastPath {
			t.Fatalf("duplicate of key %d: %+v, %v; want a fast-path Duplicate", i, res, err)
		}
	}
}

// TestFastPathFullMarkerQueueDrops holds the writer on its first marker
// with a queue of one: of ten fresh deliveries at most two markers are
// taken (one in the held write, one queued) and the rest are dropped and
// counted. Every delivery is still Processed, and the duplicate of a key
// whose marker was dropped is answered by the database.
func TestFastPathFullMarkerQueueDrops(t *testing.T) {
	ctx := context.Background()
	inner := sqlStore(t, testenv.OpenSQLite(t), sqldedup.Transactional)
	client := testenv.NewRedis(t)
	prefix := testenv.KeyPrefix(t)
	fp, release := gatedFastPath(t, inner, prefix, 1, 1)
	const n = 10
	for i := 0; i < n; i++ {
		res, err := fp.Process(ctx, dedup.Request{Group: "g", Key: fmt.Sprint("k", i)}, func(context.Context) error { return nil })
		if err != nil || res.Outcome != dedup.Processed {
			t.Fatalf("key %d: %+v, %v", i, res, err)
		}
	}
	if st := fp.Stats(); st.MarkersDropped < n-2 {
		t.Fatalf("stats = %+v, want at least %d markers dropped", st, n-2)
	}
	release()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := fp.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st := fp.Stats()
	if st.MarkerWrites+st.MarkersDropped != n || st.MarkerWriteErrors != 0 {
		t.Fatalf("stats = %+v, want %d markers written or dropped", st, n)
	}
	if m := markerCount(t, client, prefix); uint64(m) != st.MarkerWrites {
		t.Fatalf("%d markers, want %d", m, st.MarkerWrites)
	}
	// The last key's marker was dropped (the queue was full long before).
	res, err := fp.Process(ctx, dedup.Request{Group: "g", Key: fmt.Sprint("k", n-1)}, func(context.Context) error {
		return fmt.Errorf("ran twice")
	})
	if err != nil || res.Outcome != dedup.Duplicate || res.FastPath {
		t.Fatalf("duplicate of a dropped marker: %+v, %v; want the database's Duplicate", res, err)
	}
}
