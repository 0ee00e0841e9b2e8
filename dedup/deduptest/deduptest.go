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
// deletes inside the retry horizon, and bad input gets a clear error. A
// transactional store acknowledges only a committed transaction: not one
// whose handler swallowed a failed statement, nor one whose connection was
// killed before COMMIT, while a failure the handler undid with a savepoint
// is its own business.
//
// A case that needs a hook the subject lacks fails under CI=true unless the
// subject declares the case in Subject.Unsupported with a reason.
package deduptest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
)

// Subject is one store under test, with the hooks the suite needs. A case
// whose hook is nil fails, unless the subject names the case in
// Unsupported with the reason it cannot run there; then it is skipped with
// that reason. Outside CI (CI=true unset) a missing hook that is not
// declared skips instead of failing, so a store under development can run
// the suite early. Cases that do not apply to the subject's mode (a lease
// takeover on a transactional store) are skipped in every run.
type Subject struct {
	// Store is the store under test. Required.
	Store dedup.Store
	// Mode is the store's own mode (sqldedup.Config.Mode is the same
	// type; redisdedup's lease store is dedup.Lease). Defaults to
	// dedup.Transactional.
	Mode dedup.Mode
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
	// Unsupported maps a case name (such as "ConnectionKilledMidTransaction")
	// to the reason this subject cannot provide the hook the case needs
	// (such as "SQLite runs in process: there is no server connection to
	// kill").
	Unsupported map[string]string

	caseName string // set by Run: the case being run
}

// need fails or skips t when the hook named hook is missing (ok false):
// it skips with the subject's reason when the case is declared Unsupported,
// fails under CI=true, and skips otherwise.
func (s Subject) need(t *testing.T, hook string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if reason := s.Unsupported[s.caseName]; reason != "" {
		t.Skipf("unsupported by this subject: %s", reason)
	}
	msg := fmt.Sprintf("subject has no %s hook and does not declare case %q in Subject.Unsupported", hook, s.caseName)
	if testenv.InCI() {
		t.Fatal(msg + " (CI=true: a missing hook is a failure)")
	}
	t.Skip(msg)
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
		{"SwallowedStatementErrorNotAcked", testSwallowedStatementError},
		{"SavepointRecoveredErrorAcked", testSavepointRecovered},
		{"CommitOnKilledConnectionNotAcked", testCommitOnKilledConnection},
		{"HandlerCannotEndTransaction", testHandlerCannotEndTransaction},
		{"HandlerCannotCommitImplicitly", testHandlerCannotCommitImplicitly},
		{"BuryOncePerMessage", testBuryOnce},
		{"BuryHostileMessage", testBuryHostile},
		{"HostileMessageIDProcessed", testHostileMessageID},
	}
	tests = append(tests, leaseCases...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := h.New(t)
			if s.Store == nil {
				t.Fatal("harness returned a subject without a store")
			}
			s.caseName = tc.name
			tc.fn(t, s)
		})
	}
}
