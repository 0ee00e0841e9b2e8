package redisdedup

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// benchKeys is the number of done keys the duplicate benchmarks cycle
// through.
const benchKeys = 1024

var benchParallelism = []int{1, 8, 32}

// BenchmarkDuplicate measures rejecting a duplicate: through the fast path
// (one Redis GET, marker hit) against the inner store's own path, with
// b.SetParallelism 1, 8 and 32 (goroutines = parallelism x GOMAXPROCS).
//
//	fastpath/...            FastPath marker hit (the inner store is not asked)
//	leasestore/...          the Redis-only lease store (one claim script)
//	sql-<db>/...            the transactional SQL store's duplicate path
//	fastpath-sql-<db>/...   the fast path in front of that SQL store
//
// The SQL rows use SQLite always, PostgreSQL and MySQL when the test script
// provides them.
func BenchmarkDuplicate(b *testing.B) {
	client := newRedis(b)
	prefix := keyPrefix(b)

	inner := newMapStore()
	fp, err := NewFastPath(inner, client, FastPathConfig{KeyPrefix: prefix, Timeout: time.Second, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	benchStore(b, "fastpath", fp, true)

	ls, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: prefix, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	benchStore(b, "leasestore", ls, false)

	for _, d := range testenv.Databases() {
		b.Run("db="+d.Name, func(b *testing.B) {
			db := d.Open(b)
			s, err := sqldedup.New(db, sqldedup.Config{TablePrefix: testenv.TablePrefix(b), Logger: quietLogger})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Migrate(context.Background()); err != nil {
				b.Fatal(err)
			}
			benchStore(b, "sql", s, false)
			fp, err := NewFastPath(s, client, FastPathConfig{KeyPrefix: keyPrefix(b), Timeout: time.Second, Logger: quietLogger})
			if err != nil {
				b.Fatal(err)
			}
			benchStore(b, "fastpath-sql", fp, true)
		})
	}
}

// benchStore marks benchKeys keys done through s, then measures
// duplicate deliveries of them at each parallelism.
func benchStore(b *testing.B, name string, s dedup.Store, wantFastPath bool) {
	ctx := context.Background()
	group := "bench-" + name
	reqs := make([]dedup.Request, benchKeys)
	for i := range reqs {
		reqs[i] = dedup.Request{Group: group, Key: "k" + strconv.Itoa(i), Fingerprint: dedup.Fingerprint([]byte{byte(i)})}
		res, err := s.Process(ctx, reqs[i], func(context.Context) error { return nil })
		if err != nil || res.Outcome != dedup.Processed {
			b.Fatalf("%s: seeding %s: %+v, %v", name, reqs[i].Key, res, err)
		}
	}
	// Twice more, so that every store has answered each key as a
	// duplicate before the clock starts. (A fast path's marker is written
	// by the seeding delivery itself.)
	for range 2 {
		for _, r := range reqs {
			if _, err := s.Process(ctx, r, failIfCalled); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, p := range benchParallelism {
		b.Run(fmt.Sprintf("%s/parallelism=%d", name, p), func(b *testing.B) {
			var next atomic.Uint64
			b.SetParallelism(p)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := reqs[next.Add(1)%benchKeys]
					res, err := s.Process(ctx, r, failIfCalled)
					if err != nil {
						b.Error(err)
						return
					}
					if res.Outcome != dedup.Duplicate || res.FastPath != wantFastPath {
						b.Errorf("got %+v, want a duplicate (fast path %v)", res, wantFastPath)
						return
					}
				}
			})
		})
	}
}

func failIfCalled(context.Context) error {
	return fmt.Errorf("handler called for a duplicate")
}
