// Package deduptest is the conformance suite every idemq dedup store must
// pass, whatever its database or fast path. A store package runs it from its
// own tests with a Harness that builds fresh stores on real servers.
//
// The suite proves the guarantees of package dedup: a first delivery runs the
// handler once, a duplicate does not, 32 concurrent deliveries of one key
// give exactly one effect, a crash before commit leaves nothing, leases are
// taken over after expiry and fenced, a lease ends before it can expire
// (also for a paused holder, a stalled store and a cancelled delivery) and
// its fencing token grows with every owner, a fast path whose Redis is cut still
// dedups through the database, dead letters and redrive work, cleanup never
// deletes inside the retry horizon, and bad input gets a clear error.
package deduptest

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// Mode says which guarantee a subject store gives.
type Mode int

const (
	// Transactional stores pass the handler a database transaction
	// (dedup.Tx) and make its effects exactly once.
	Transactional Mode = iota
	// Lease stores run the handler under an owner-fenced lease.
	Lease
)

// Subject is one store under test, with the hooks the suite needs. Fields a
// store cannot provide are left nil and the tests that need them are
// skipped with a reason.
type Subject struct {
	// Store is the store under test. Required.
	Store dedup.Store
	// Mode is the store's mode.
	Mode Mode
	// DB is the database the store writes to (transactional mode: the
	// suite writes its effect rows through dedup.Tx and counts them here).
	DB *gorm.DB
	// Prefix is a table prefix for the suite's own effect table.
	Prefix string
	// Ledger is the store's ledger, when it has one.
	Ledger dedup.Ledger
	// Zombie returns a second store on the same rows whose leases are
	// never renewed and last ShortLease (lease mode).
	Zombie func(t *testing.T) dedup.Store
	// ShortLease is the lease length of the stores Zombie returns.
	ShortLease time.Duration
	// Leased returns a store on the same rows with the given lease,
	// renewed as usual, whose connection can be stalled (lease mode).
	Leased func(t *testing.T, lease time.Duration) LeasedStore
	// KillConn kills the database connection that tx runs on
	// (transactional mode on a server database).
	KillConn func(t *testing.T, tx *gorm.DB)
	// CutRedis makes the store's Redis unreachable (fast path), and
	// RestoreRedis reconnects it. Fallbacks counts fast-path fallbacks.
	CutRedis     func()
	RestoreRedis func()
	Fallbacks    func() int64
	// Cleanup deletes expired keys, and Backdate makes (group, key) look
	// age old to it. Keep is the store's retention.
	Cleanup  func(ctx context.Context) (int64, error)
	Backdate func(t *testing.T, group, key string, age time.Duration)
	Keep     time.Duration
}

// Harness builds subjects for the suite.
type Harness struct {
	// New returns a subject with fresh, empty tables. Required.
	New func(t *testing.T) Subject
}

// Run runs the whole suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s Subject)
	}{
		{"FirstDeliveryRunsOnce", testFirstDelivery},
		{"DuplicateDoesNotRun", testDuplicate},
		{"GroupsDoNotShareKeys", testGroups},
		{"KeysCompareExactly", testExactKeys},
		{"Concurrent32OneEffect", testConcurrent},
		{"HandlerErrorLeavesNothing", testHandlerError},
		{"PanicLeavesNothing", testPanic},
		{"CancelledContextLeavesNothing", testCancelled},
		{"ConnectionKilledMidTransaction", testKilledConn},
		{"LeaseExpiryTakeoverAndFencing", testLeaseTakeover},
		{"ZombieReleaseDoesNotFreeSuccessor", testZombieRelease},
		{"RedisCutStillDedups", testRedisCut},
		{"FingerprintMismatchReported", testMismatch},
		{"DeadLetterAndRedrive", testDeadLetter},
		{"CleanupKeepsHorizon", testCleanup},
		{"BadInput", testBadInput},
	}
	tests = append(tests, leaseCases...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := h.New(t)
			if s.Store == nil {
				t.Fatal("harness returned a subject without a store")
			}
			tc.fn(t, s)
		})
	}
}
