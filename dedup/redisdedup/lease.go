package redisdedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
)

// LeaseConfig configures a [LeaseStore].
type LeaseConfig struct {
	// KeyPrefix starts every key. Defaults to DefaultKeyPrefix ("idemq:").
	// It must not contain '{' or '}'.
	KeyPrefix string
	// Lease is how long a claim lives without renewal; it is renewed every
	// Lease/3 while fn runs. A key whose owner died can be taken over after
	// at most Lease. At least 30 milliseconds. Defaults to 30 seconds.
	Lease time.Duration
	// Retention sets how long done and dead marks live (Keep). It is
	// checked with Retention.WithDefaults().Validate(), so a retention that
	// does not outlast the broker's retry horizon plus the redrive window
	// is rejected with dedup.ErrRetentionTooShort.
	Retention dedup.Retention
	// Timeout bounds each Redis call. It must not exceed Lease/3, so that a
	// slow renewal cannot outlive the lease. Defaults to 1 second or
	// Lease/3, whichever is shorter.
	Timeout time.Duration
	// Logger receives warnings about failed renewals and releases.
	// Defaults to slog.Default().
	Logger *slog.Logger
}

// LeaseStore is a Redis-only [dedup.Store] in lease mode. A key holds, at
// any time, nothing, a claim (PROCESSING, with its owner token and a
// lease), a done mark (with the payload fingerprint), or a dead mark. See
// the package documentation for its guarantees and its limits. Its results
// never set FastPath: the store is itself the authority.
type LeaseStore struct {
	client  redis.UniversalClient
	prefix  string
	lease   time.Duration
	keep    time.Duration
	call    caller
	logger  *slog.Logger
	noRenew bool // test hook: behave like an owner stuck without renewals
}

// Values a lease-store key can hold.
const (
	valueClaim = "p:" // + owner token
	valueDone  = "d:" // + payload fingerprint (may be empty)
	valueDead  = "x:"
)

// claimScript claims KEYS[1] for owner ARGV[1] with a lease of ARGV[2]
// milliseconds if the key is free. The claim's value is
// "p:<fencing token>:<owner>", the token being the Redis clock in
// microseconds. It returns {1, value} when claimed and {0, value, pttl}
// otherwise, read atomically. (Redis before 5 needs effect replication
// turned on to write after reading TIME; later versions always use it.)
var claimScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local v = redis.call('GET', KEYS[1])
if not v then
  local t = redis.call('TIME')
  local claim = 'p:' .. t[1] .. string.format('%06d', tonumber(t[2])) .. ':' .. ARGV[1]
  redis.call('SET', KEYS[1], claim, 'PX', ARGV[2])
  return {1, claim}
end
return {0, v, redis.call('PTTL', KEYS[1])}
`)

// renewScript extends the lease of KEYS[1] to ARGV[2] milliseconds if it
// still holds the claim value ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// doneScript turns the claim ARGV[1] on KEYS[1] into the done mark ARGV[2]
// living ARGV[3] milliseconds, if the claim is still there.
var doneScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
`)

// releaseScript deletes KEYS[1] if it still holds the claim value ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// markDeadScript sets the dead mark ARGV[1] living ARGV[2] milliseconds on
// KEYS[1] unless the key is done (its value starts with ARGV[3]).
var markDeadScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[3])) == ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// clearDeadScript deletes KEYS[1] if it holds the dead mark ARGV[1].
var clearDeadScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// minLease is the shortest lease NewLeaseStore accepts: renewals every
// Lease/3 must be at least a few milliseconds apart.
const minLease = 30 * time.Millisecond

// NewLeaseStore returns a LeaseStore keeping its claims and marks in
// client. It returns an error if client is nil or cfg is invalid
// (dedup.ErrRetentionTooShort for a too short retention).
func NewLeaseStore(client redis.UniversalClient, cfg LeaseConfig) (*LeaseStore, error) {
	if isNil(client) {
		return nil, errors.New("redisdedup: nil redis client")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if err := validatePrefix(cfg.KeyPrefix); err != nil {
		return nil, err
	}
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Lease < minLease {
		return nil, fmt.Errorf("redisdedup: lease %s is shorter than %s", cfg.Lease, minLease)
	}
	ret := cfg.Retention.WithDefaults()
	if err := ret.Validate(); err != nil {
		return nil, fmt.Errorf("redisdedup: retention: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = min(time.Second, cfg.Lease/3)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("redisdedup: negative timeout %s", cfg.Timeout)
	}
	if cfg.Timeout > cfg.Lease/3 {
		return nil, fmt.Errorf("redisdedup: timeout %s exceeds a third of the lease (%s)", cfg.Timeout, cfg.Lease/3)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &LeaseStore{
		client: client,
		prefix: cfg.KeyPrefix,
		lease:  cfg.Lease,
		keep:   ret.Keep,
		call:   newCaller(client, cfg.Timeout),
		logger: cfg.Logger,
	}, nil
}

// Process claims the key and runs fn, as lease mode defines:
//
//   - key done: Duplicate, fn not called (Mismatch if the stored and the
//     request fingerprint are both set and differ);
//   - key dead: Duplicate with Dead set;
//   - key claimed by another owner with a live lease: Busy, RetryAfter set
//     to the time the lease has left;
//   - otherwise the key is claimed with a fresh owner token and fencing
//     token, and fn runs under a dedup.LeaseKeeper: its context carries
//     the fencing token (dedup.Fence) and ends, with a cause wrapping
//     dedup.ErrLeaseLost, Lease/5 before the lease could expire unless a
//     renewal was confirmed, or at once if a renewal fails. When fn succeeds the claim becomes a
//     done mark and the result is Processed; if the claim was taken over
//     meanwhile nothing is marked and the error wraps dedup.ErrLeaseLost.
//     When fn fails, the claim is released and fn's error is returned
//     unchanged. When fn panics, the claim is released and the panic goes
//     on.
//
// fn's context is cancelled and the renewals stop before Process returns.
func (s *LeaseStore) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	if err := req.Validate(); err != nil {
		return dedup.Result{}, err
	}
	if fn == nil {
		return dedup.Result{}, dedup.ErrNilFunc
	}
	owner, err := newOwnerToken()
	if err != nil {
		return dedup.Result{}, err
	}
	key := s.key(req.Group, req.Key)

	claimedAt := time.Now()
	var reply []any
	err = s.call.do(ctx, func(ctx context.Context) error {
		r, err := claimScript.Run(ctx, s.client, []string{key}, owner, s.lease.Milliseconds()).Slice()
		reply = r
		return err
	})
	if err != nil {
		return dedup.Result{}, fmt.Errorf("redisdedup: claim %q in group %q: %w", req.Key, req.Group, storeError(ctx, err))
	}
	claimed, value, pttl, err := parseClaimReply(reply)
	if err != nil {
		return dedup.Result{}, fmt.Errorf("redisdedup: claim %q in group %q: %w", req.Key, req.Group, err)
	}
	if !claimed {
		return s.decided(req, key, value, pttl)
	}
	claim := value
	fence, err := claimFence(claim, owner)
	if err != nil {
		s.release(ctx, req, key, claim)
		return dedup.Result{}, fmt.Errorf("redisdedup: claim %q in group %q: %w", req.Key, req.Group, err)
	}

	finished := false
	defer func() {
		if !finished {
			// fn panicked or called runtime.Goexit: give the key back so
			// that a redelivery need not wait for the lease to expire, and
			// let the panic go on.
			s.release(ctx, req, key, claim)
		}
	}()
	fnErr, lost := s.keeper(req, key, claim).Run(ctx, claimedAt, fence, fn)
	finished = true

	if fnErr != nil {
		s.release(ctx, req, key, claim)
		return dedup.Result{}, fnErr
	}
	if lost != nil {
		s.logger.Warn("redisdedup: the handler outlived its lease",
			slog.String("group", req.Group), slog.String("key", req.Key), slog.Any("error", lost))
	}

	// fn succeeded: record it even if the caller is cancelling now.
	var marked int64
	err = s.call.do(context.WithoutCancel(ctx), func(ctx context.Context) error {
		n, err := doneScript.Run(ctx, s.client, []string{key}, claim, valueDone+req.Fingerprint, s.keep.Milliseconds()).Int64()
		marked = n
		return err
	})
	if err != nil {
		// The mark's context outlives the delivery's: a failure here is
		// Redis's.
		return dedup.Result{}, fmt.Errorf("redisdedup: mark %q in group %q done: %w", req.Key, req.Group,
			storeError(context.Background(), err))
	}
	if marked != 1 {
		return dedup.Result{}, fmt.Errorf("redisdedup: mark %q in group %q done: claim expired or taken over: %w", req.Key, req.Group, dedup.ErrLeaseLost)
	}
	return dedup.Result{Outcome: dedup.Processed}, nil
}

// claimFence reads the fencing token from a claim value
// "p:<token>:<owner>".
func claimFence(claim, owner string) (uint64, error) {
	rest, ok := strings.CutPrefix(claim, valueClaim)
	if !ok {
		return 0, fmt.Errorf("unexpected claim value %q", claim)
	}
	tok, own, ok := strings.Cut(rest, ":")
	if !ok || own != owner {
		return 0, fmt.Errorf("unexpected claim value %q", claim)
	}
	fence, err := strconv.ParseUint(tok, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unexpected claim value %q: %w", claim, err)
	}
	return fence, nil
}

// parseClaimReply reads claimScript's answer.
func parseClaimReply(reply []any) (claimed bool, value string, pttl time.Duration, err error) {
	if len(reply) == 0 {
		return false, "", 0, errors.New("empty reply from claim script")
	}
	flag, ok := reply[0].(int64)
	if !ok {
		return false, "", 0, fmt.Errorf("unexpected claim reply %v", reply)
	}
	if flag == 1 {
		if len(reply) != 2 {
			return false, "", 0, fmt.Errorf("unexpected claim reply %v", reply)
		}
		value, ok := reply[1].(string)
		if !ok {
			return false, "", 0, fmt.Errorf("unexpected claim reply %v", reply)
		}
		return true, value, 0, nil
	}
	if len(reply) != 3 {
		return false, "", 0, fmt.Errorf("unexpected claim reply %v", reply)
	}
	value, ok1 := reply[1].(string)
	ms, ok2 := reply[2].(int64)
	if !ok1 || !ok2 {
		return false, "", 0, fmt.Errorf("unexpected claim reply %v", reply)
	}
	return false, value, time.Duration(ms) * time.Millisecond, nil
}

// decided turns the value found on a key that could not be claimed into a
// result.
func (s *LeaseStore) decided(req dedup.Request, key, value string, pttl time.Duration) (dedup.Result, error) {
	switch {
	case strings.HasPrefix(value, valueDone):
		stored := value[len(valueDone):]
		return dedup.Result{
			Outcome:  dedup.Duplicate,
			Mismatch: stored != "" && req.Fingerprint != "" && stored != req.Fingerprint,
		}, nil
	case value == valueDead:
		return dedup.Result{Outcome: dedup.Duplicate, Dead: true}, nil
	case strings.HasPrefix(value, valueClaim):
		if pttl <= 0 {
			// No expiry reported (the key vanished or was persisted by
			// hand): ask again after a full lease.
			pttl = s.lease
		}
		return dedup.Result{Outcome: dedup.Busy, RetryAfter: pttl}, nil
	}
	return dedup.Result{}, fmt.Errorf("redisdedup: key %q holds a value this store did not write", key)
}

// keeper returns the LeaseKeeper of the claim on key: renewed every
// lease/3 with an owner-checked script, unless the test hook noRenew is
// set.
func (s *LeaseStore) keeper(req dedup.Request, key, claim string) dedup.LeaseKeeper {
	k := dedup.LeaseKeeper{
		Lease: s.lease,
		Renew: func(ctx context.Context) error {
			var renewed int64
			err := s.call.do(ctx, func(ctx context.Context) error {
				n, err := renewScript.Run(ctx, s.client, []string{key}, claim, s.lease.Milliseconds()).Int64()
				renewed = n
				return err
			})
			if err != nil {
				return fmt.Errorf("redisdedup: could not renew the claim on %q in group %q: %w", req.Key, req.Group, err)
			}
			if renewed != 1 {
				return fmt.Errorf("redisdedup: claim on %q in group %q expired or was taken over: %w", req.Key, req.Group, dedup.ErrLeaseLost)
			}
			return nil
		},
		OnLost: func(cause error) {
			s.logger.Warn("redisdedup: lease lost; the handler's context ends",
				slog.String("group", req.Group), slog.String("key", req.Key), slog.Any("error", cause))
		},
	}
	if s.noRenew {
		k.RenewEvery = -1
	}
	return k
}

// release deletes the claim if it is still this owner's. A failed release
// only delays redeliveries until the lease expires, so it is logged.
func (s *LeaseStore) release(ctx context.Context, req dedup.Request, key, claim string) {
	err := s.call.do(context.WithoutCancel(ctx), func(ctx context.Context) error {
		return releaseScript.Run(ctx, s.client, []string{key}, claim).Err()
	})
	if err != nil {
		s.logger.Warn("redisdedup: could not release claim; redeliveries wait for the lease to expire",
			slog.String("group", req.Group), slog.String("key", req.Key), slog.Any("error", err))
	}
}

// MarkDead records the key as dead for the retention period, so that
// redeliveries are Duplicate with Dead set. A key already done stays done.
// A live claim is replaced: its owner's completion then fails with
// dedup.ErrLeaseLost.
func (s *LeaseStore) MarkDead(ctx context.Context, group, key string) error {
	if err := validateGroupKey(group, key); err != nil {
		return err
	}
	rk := s.key(group, key)
	err := s.call.do(ctx, func(ctx context.Context) error {
		return markDeadScript.Run(ctx, s.client, []string{rk}, valueDead, s.keep.Milliseconds(), valueDone).Err()
	})
	if err != nil {
		return fmt.Errorf("redisdedup: mark %q in group %q dead: %w", key, group, storeError(ctx, err))
	}
	return nil
}

// ClearDead removes the key's dead mark, and only a dead mark: a done mark
// or a claim is left as it is.
func (s *LeaseStore) ClearDead(ctx context.Context, group, key string) error {
	if err := validateGroupKey(group, key); err != nil {
		return err
	}
	rk := s.key(group, key)
	err := s.call.do(ctx, func(ctx context.Context) error {
		return clearDeadScript.Run(ctx, s.client, []string{rk}, valueDead).Err()
	})
	if err != nil {
		return fmt.Errorf("redisdedup: clear dead mark of %q in group %q: %w", key, group, storeError(ctx, err))
	}
	return nil
}

func (s *LeaseStore) key(group, key string) string {
	return redisKey(s.prefix, kindLease, group, key)
}

var (
	_ dedup.Store      = (*LeaseStore)(nil)
	_ dedup.DeadMarker = (*LeaseStore)(nil)
)
