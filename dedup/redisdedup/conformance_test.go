package redisdedup

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/deduptest"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

const conformanceShortLease = 300 * time.Millisecond

// leaseSubject is the Redis-only lease store on the real Redis.
func leaseSubject(t *testing.T) deduptest.Subject {
	client := newRedis(t)
	prefix := keyPrefix(t)
	s, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: prefix, Lease: 2 * time.Second, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	return deduptest.Subject{
		Store:      s,
		Mode:       dedup.Lease,
		ShortLease: conformanceShortLease,
		Zombie:     func(t *testing.T) dedup.Store { return stuckLeaseStore(t, client, prefix) },
		Unsupported: map[string]string{
			"RedisCutStillDedups":  "the Redis lease store has no database to fall back to",
			"DeadLetterAndRedrive": "the Redis lease store keeps no ledger; dead letters need a SQL store",
			"BuryOncePerMessage":   "the Redis lease store keeps no ledger; dead letters need a SQL store",
			"BuryHostileMessage":   "the Redis lease store keeps no ledger; dead letters need a SQL store",
			"CleanupKeepsHorizon":  "Redis expires keys by TTL; there is no Cleanup",
		},
		Leased: func(t *testing.T, lease time.Duration) deduptest.LeasedStore {
			p := newProxy(t, redisAddr(t))
			ls, err := NewLeaseStore(newClient(t, p.Addr()), LeaseConfig{KeyPrefix: prefix, Lease: lease, Logger: quietLogger})
			if err != nil {
				t.Fatal(err)
			}
			return deduptest.LeasedStore{Store: ls, Stall: func() func() { p.Stall(); return p.Resume }}
		},
	}
}

// stuckLeaseStore returns a lease store on the same keys whose short
// leases are never renewed: an owner that hangs.
func stuckLeaseStore(t *testing.T, client *redis.Client, prefix string) *LeaseStore {
	t.Helper()
	z, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: prefix, Lease: conformanceShortLease, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	z.noRenew = true
	return z
}

// withFastPath puts a fast path in front of sub's store. The fast path
// reaches Redis through a proxy the suite can cut; the inner store keeps
// its own connections.
func withFastPath(t *testing.T, sub deduptest.Subject) deduptest.Subject {
	p := newProxy(t, redisAddr(t))
	fp, err := NewFastPath(sub.Store, newClient(t, p.Addr()), FastPathConfig{
		KeyPrefix: keyPrefix(t),
		TTL:       dedup.Retention{}.WithDefaults().Keep,
		Timeout:   2 * time.Second, // a busy test machine must not turn hits into fallbacks
		Logger:    quietLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	sub.Store = fp
	sub.CutRedis = p.Cut
	sub.RestoreRedis = p.Restore
	sub.Fallbacks = func() int64 { return int64(fp.Stats().Fallbacks) }
	return sub
}

func TestConformanceLeaseStore(t *testing.T) {
	deduptest.Run(t, deduptest.Harness{New: leaseSubject})
}

func TestConformanceFastPathOverLeaseStore(t *testing.T) {
	deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
		return withFastPath(t, leaseSubject(t))
	}})
}

// TestConformanceFastPathOverSQLite runs the fast path over the
// transactional SQL store on the embedded SQLite database: the handler's
// transaction passes through the fast path untouched. The server databases
// are covered by the shared suite in dedup/sqldedup.
func TestConformanceFastPathOverSQLite(t *testing.T) {
	deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
		db := testenv.OpenSQLite(t)
		prefix := testenv.TablePrefix(t)
		s, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix, Logger: quietLogger})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return withFastPath(t, deduptest.Subject{
			Store:  s,
			Mode:   dedup.Transactional,
			DB:     db,
			Prefix: prefix,
			Ledger: s,
			Unsupported: map[string]string{
				"ConnectionKilledMidTransaction":   "SQLite runs in process: there is no server connection to kill",
				"CommitOnKilledConnectionNotAcked": "SQLite runs in process: there is no server connection to kill",
				"CleanupKeepsHorizon":              "covered on the bare SQL store in dedup/sqldedup",
			},
		})
	}})
}
