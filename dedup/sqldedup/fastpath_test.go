package sqldedup_test

import (
	"testing"
	"time"

	"github.com/idemq/idemq/dedup/deduptest"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestConformanceWithRedisFastPath runs the conformance suite on each SQL
// store with the Redis fast path in front, reaching the real Redis through
// a proxy that the suite cuts to prove the database still dedups.
func TestConformanceWithRedisFastPath(t *testing.T) {
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel() // databases side by side, as in TestConformance
			for _, mode := range []sqldedup.Mode{sqldedup.Transactional, sqldedup.Lease} {
				t.Run(mode.String(), func(t *testing.T) {
					deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
						sub := subject(t, d, mode, false)
						proxy := testenv.NewProxy(t, testenv.RedisAddr(t))
						rdb := testenv.NewRedisAt(t, proxy.Addr())
						fp, err := redisdedup.NewFastPath(sub.Store, rdb, redisdedup.FastPathConfig{
							KeyPrefix: testenv.KeyPrefix(t),
							// A busy test machine must not turn hits into
							// fallbacks; the suite cuts Redis to test those.
							Timeout: 2 * time.Second,
							// Ask Redis on every delivery, so that the suite sees
							// the fast path come back as soon as Redis does.
							RetryInterval: -1,
						})
						if err != nil {
							t.Fatal(err)
						}
						sub.Store = fp
						sub.CutRedis = proxy.Cut
						sub.RestoreRedis = proxy.Restore
						sub.Fallbacks = func() int64 { return int64(fp.Stats().Fallbacks) }
						// sub.Zombie stays a bare SQL store on the same tables: a
						// zombie holds a lease in the database, the authority.
						return sub
					}})
				})
			}
		})
	}
}
