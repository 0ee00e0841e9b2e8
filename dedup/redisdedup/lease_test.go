package redisdedup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

type leaseBundle struct {
	client *redis.Client
	store  *LeaseStore
	prefix string
}

func setupLease(t *testing.T, client *redis.Client, cfg LeaseConfig) *leaseBundle {
	t.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = keyPrefix(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	s, err := NewLeaseStore(client, cfg)
	if err != nil {
		t.Fatalf("NewLeaseStore: %v", err)
	}
	return &leaseBundle{client: client, store: s, prefix: cfg.KeyPrefix}
}

// value returns what Redis holds for (group, key), "" if nothing.
func (b *leaseBundle) value(t *testing.T, group, key string) string {
	t.Helper()
	v, err := b.client.Get(context.Background(), redisKey(b.prefix, kindLease, group, key)).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// holding runs Process for req on s in the background with a fn that
// blocks until release is closed, then returns fnErr. It returns once fn
// has started.
type holding struct {
	ctx     chan context.Context
	release chan struct{}
	done    chan error
	res     chan dedup.Result
}

func hold(t *testing.T, s dedup.Store, req dedup.Request, fnErr error) *holding {
	t.Helper()
	h := &holding{
		ctx:     make(chan context.Context, 1),
		release: make(chan struct{}),
		done:    make(chan error, 1),
		res:     make(chan dedup.Result, 1),
	}
	go func() {
		res, err := s.Process(context.Background(), req, func(ctx context.Context) error {
			h.ctx <- ctx
			<-h.release
			return fnErr
		})
		h.res <- res
		h.done <- err
	}()
	return h
}

// started waits for fn to start and returns its context.
func (h *holding) started(t *testing.T) context.Context {
	t.Helper()
	select {
	case ctx := <-h.ctx:
		return ctx
	case res := <-h.res:
		t.Fatalf("fn did not start: Process returned %+v, %v", res, <-h.done)
	}
	return nil
}

func (h *holding) finish() (dedup.Result, error) {
	close(h.release)
	return <-h.res, <-h.done
}

func TestLeaseProcessesOnceThenDuplicate(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	fp := dedup.Fingerprint([]byte("payload"))
	req := dedup.Request{Group: "g", Key: "k", Fingerprint: fp}
	var runs atomic.Int64
	var fnCtx context.Context
	res, err := b.store.Process(context.Background(), req, func(ctx context.Context) error {
		runs.Add(1)
		fnCtx = ctx
		fence, ok := dedup.Fence(ctx)
		v := b.value(t, "g", "k")
		owner := v[strings.LastIndex(v, ":")+1:]
		if want := fmt.Sprintf("%s%d:%s", valueClaim, fence, owner); !ok || v != want || len(owner) != 32 {
			t.Errorf("while fn runs the key holds %q, want a claim with the fencing token %d and a 128-bit owner token", v, fence)
		}
		return nil
	})
	if err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("got %+v, %v; want Processed", res, err)
	}
	if fnCtx.Err() == nil {
		t.Fatal("fn's context is still live after Process returned")
	}
	if v := b.value(t, "g", "k"); v != valueDone+fp {
		t.Fatalf("key holds %q, want the done mark %q", v, valueDone+fp)
	}
	pttl, err := b.client.PTTL(context.Background(), redisKey(b.prefix, kindLease, "g", "k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if keep := (dedup.Retention{}).WithDefaults().Keep; pttl <= keep-time.Hour || pttl > keep {
		t.Fatalf("done mark PTTL = %s, want about the retention %s", pttl, keep)
	}

	res = mustProcess(t, b.store, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.Mismatch || res.Dead {
		t.Fatalf("got %+v, want a plain Duplicate", res)
	}
	res = mustProcess(t, b.store, dedup.Request{Group: "g", Key: "k", Fingerprint: dedup.Fingerprint([]byte("other"))}, counter(&runs))
	if res.Outcome != dedup.Duplicate || !res.Mismatch {
		t.Fatalf("got %+v, want Duplicate with Mismatch", res)
	}
	res = mustProcess(t, b.store, dedup.Request{Group: "other-group", Key: "k"}, counter(&runs))
	if res.Outcome != dedup.Processed {
		t.Fatalf("another group: got %+v, want Processed", res)
	}
	if runs.Load() != 2 {
		t.Fatalf("fn ran %d times, want 2", runs.Load())
	}
}

func TestLeaseConcurrentDeliveriesRunOnce(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	out := runConcurrently(t, b.store, dedup.Request{Group: "g", Key: "k"}, 32)
	if out.runs != 1 {
		t.Fatalf("fn ran %d times, want exactly 1", out.runs)
	}
	if out.byOutcome[dedup.Processed] != 1 || out.byOutcome[dedup.Duplicate]+out.byOutcome[dedup.Busy] != 31 {
		t.Fatalf("outcomes = %v, want 1 processed and 31 duplicate or busy", out.byOutcome)
	}
}

func TestLeaseBusyWhileHeld(t *testing.T) {
	const lease = 10 * time.Second
	b := setupLease(t, newRedis(t), LeaseConfig{Lease: lease})
	req := dedup.Request{Group: "g", Key: "k"}
	h := hold(t, b.store, req, nil)
	h.started(t)

	var runs atomic.Int64
	res := mustProcess(t, b.store, req, counter(&runs))
	if res.Outcome != dedup.Busy || res.RetryAfter <= 0 || res.RetryAfter > lease {
		t.Fatalf("got %+v, want Busy with RetryAfter in (0, %s]", res, lease)
	}
	if res, err := h.finish(); err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("holder: got %+v, %v", res, err)
	}
	if res := mustProcess(t, b.store, req, counter(&runs)); res.Outcome != dedup.Duplicate {
		t.Fatalf("got %+v, want Duplicate", res)
	}
	if runs.Load() != 0 {
		t.Fatalf("fn ran %d times, want 0", runs.Load())
	}
}

func TestLeaseFuncErrorReleasesClaim(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	req := dedup.Request{Group: "g", Key: "k"}
	boom := idemq.Permanent(errors.New("payment declined"))
	_, err := b.store.Process(context.Background(), req, func(context.Context) error { return boom })
	if err != boom {
		t.Fatalf("err = %v, want fn's error unchanged", err)
	}
	if v := b.value(t, "g", "k"); v != "" {
		t.Fatalf("after a failure the key holds %q, want it released", v)
	}
	var runs atomic.Int64
	if res := mustProcess(t, b.store, req, counter(&runs)); res.Outcome != dedup.Processed || runs.Load() != 1 {
		t.Fatalf("redelivery: got %+v, runs %d", res, runs.Load())
	}
}

func TestLeasePanicReleasesClaim(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	req := dedup.Request{Group: "g", Key: "k"}
	var fnCtx context.Context
	func() {
		defer func() {
			if p := recover(); p != "handler bug" {
				t.Fatalf("recovered %v, want the handler's panic", p)
			}
		}()
		_, _ = b.store.Process(context.Background(), req, func(ctx context.Context) error {
			fnCtx = ctx
			panic("handler bug")
		})
		t.Fatal("Process returned instead of panicking")
	}()
	if fnCtx.Err() == nil {
		t.Fatal("fn's context is still live after the panic")
	}
	if v := b.value(t, "g", "k"); v != "" {
		t.Fatalf("after a panic the key holds %q, want it released", v)
	}
	var runs atomic.Int64
	if res := mustProcess(t, b.store, req, counter(&runs)); res.Outcome != dedup.Processed {
		t.Fatalf("redelivery: got %+v", res)
	}
}

// TestLeaseTakeoverAndFencing: an owner stops renewing (stuck), its lease
// expires, a successor takes the key over and completes; the zombie's
// completion is rejected and the successor's done mark stands.
func TestLeaseTakeoverAndFencing(t *testing.T) {
	client := newRedis(t)
	prefix := keyPrefix(t)
	const lease = 150 * time.Millisecond
	zombie := setupLease(t, client, LeaseConfig{KeyPrefix: prefix, Lease: lease})
	zombie.store.noRenew = true
	successor := setupLease(t, client, LeaseConfig{KeyPrefix: prefix, Lease: 10 * time.Second})

	zfp, sfp := dedup.Fingerprint([]byte("zombie")), dedup.Fingerprint([]byte("successor"))
	z := hold(t, zombie.store, dedup.Request{Group: "g", Key: "k", Fingerprint: zfp}, nil)
	z.started(t)
	waitFor(t, "the stuck owner's lease to expire", func() bool { return zombie.value(t, "g", "k") == "" })

	var runs atomic.Int64
	res := mustProcess(t, successor.store, dedup.Request{Group: "g", Key: "k", Fingerprint: sfp}, counter(&runs))
	if res.Outcome != dedup.Processed || runs.Load() != 1 {
		t.Fatalf("successor: got %+v, runs %d; want Processed", res, runs.Load())
	}

	res, err := z.finish()
	if !errors.Is(err, dedup.ErrLeaseLost) || res.Outcome != 0 {
		t.Fatalf("zombie: got %+v, %v; want ErrLeaseLost", res, err)
	}
	if v := successor.value(t, "g", "k"); v != valueDone+sfp {
		t.Fatalf("key holds %q, want the successor's done mark", v)
	}
}

// TestLeaseZombieCannotReleaseSuccessor: a zombie whose fn fails after the
// takeover must not delete its successor's live claim.
func TestLeaseZombieCannotReleaseSuccessor(t *testing.T) {
	client := newRedis(t)
	prefix := keyPrefix(t)
	zombie := setupLease(t, client, LeaseConfig{KeyPrefix: prefix, Lease: 100 * time.Millisecond})
	zombie.store.noRenew = true
	successor := setupLease(t, client, LeaseConfig{KeyPrefix: prefix, Lease: 10 * time.Second})
	req := dedup.Request{Group: "g", Key: "k"}

	zerr := errors.New("zombie failed")
	z := hold(t, zombie.store, req, zerr)
	z.started(t)
	waitFor(t, "the stuck owner's lease to expire", func() bool { return zombie.value(t, "g", "k") == "" })

	s := hold(t, successor.store, req, nil)
	s.started(t)
	claim := successor.value(t, "g", "k")
	if _, err := z.finish(); err != zerr {
		t.Fatalf("zombie: err = %v, want its fn's error", err)
	}
	if v := successor.value(t, "g", "k"); v != claim {
		t.Fatalf("after the zombie's release the key holds %q, want the successor's claim %q", v, claim)
	}
	var runs atomic.Int64
	if res := mustProcess(t, successor.store, req, counter(&runs)); res.Outcome != dedup.Busy {
		t.Fatalf("got %+v, want Busy", res)
	}
	if res, err := s.finish(); err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("successor: got %+v, %v", res, err)
	}
}

// TestLeaseRenewalKeepsClaim holds a short lease for several lease
// periods: renewals keep it, so other deliveries stay Busy throughout.
func TestLeaseRenewalKeepsClaim(t *testing.T) {
	const lease = 1500 * time.Millisecond
	b := setupLease(t, newRedis(t), LeaseConfig{Lease: lease})
	req := dedup.Request{Group: "g", Key: "k"}
	h := hold(t, b.store, req, nil)
	fnCtx := h.started(t)
	claim := b.value(t, "g", "k")

	// Watch the lease's remaining time rise three times: three renewals.
	rk := redisKey(b.prefix, kindLease, "g", "k")
	renewals := 0
	last := time.Duration(-1)
	waitFor(t, "three renewals", func() bool {
		if fnCtx.Err() != nil {
			t.Fatalf("fn's context was cancelled after %d renewals: %v", renewals, context.Cause(fnCtx))
		}
		pttl, err := b.client.PTTL(context.Background(), rk).Result()
		if err != nil {
			t.Fatal(err)
		}
		if last >= 0 && pttl > last {
			renewals++
		}
		last = pttl
		return renewals >= 3
	})
	if v := b.value(t, "g", "k"); v != claim {
		t.Fatalf("key holds %q after renewals, want the claim %q", v, claim)
	}
	if fnCtx.Err() != nil {
		t.Fatalf("fn's context was cancelled while the lease was renewed: %v", context.Cause(fnCtx))
	}
	if res, err := h.finish(); err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("got %+v, %v", res, err)
	}
}

// TestLeaseLostCancelsFunc: someone else takes the key while fn runs; the
// next renewal sees it and cancels fn's context with ErrLeaseLost.
func TestLeaseLostCancelsFunc(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{Lease: 300 * time.Millisecond})
	req := dedup.Request{Group: "g", Key: "k"}
	rk := redisKey(b.prefix, kindLease, "g", "k")
	foreign := valueClaim + "someoneelse"
	res, err := b.store.Process(context.Background(), req, func(ctx context.Context) error {
		if err := b.client.Set(context.Background(), rk, foreign, time.Minute).Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(15 * time.Second):
			return errors.New("fn's context was not cancelled although the key was taken")
		}
	})
	if !errors.Is(err, dedup.ErrLeaseLost) {
		t.Fatalf("got %+v, %v; want fn's ErrLeaseLost cause", res, err)
	}
	if v := b.value(t, "g", "k"); v != foreign {
		t.Fatalf("key holds %q, want the new owner's %q untouched", v, foreign)
	}
}

// TestLeaseRenewalFailureCancelsFunc cuts Redis while fn runs: renewals
// fail, and fn's context is cancelled before the lease could run out.
func TestLeaseRenewalFailureCancelsFunc(t *testing.T) {
	p := newProxy(t, redisAddr(t))
	b := setupLease(t, newClient(t, p.Addr()), LeaseConfig{Lease: 300 * time.Millisecond})
	req := dedup.Request{Group: "g", Key: "k"}
	var cause error
	_, err := b.store.Process(context.Background(), req, func(ctx context.Context) error {
		p.Cut()
		select {
		case <-ctx.Done():
		case <-time.After(15 * time.Second):
			return errors.New("fn's context was not cancelled although renewals failed")
		}
		cause = context.Cause(ctx)
		return cause
	})
	if !errors.Is(cause, dedup.ErrLeaseLost) || err != cause {
		t.Fatalf("cause = %v, err = %v; want fn cancelled with ErrLeaseLost and its error returned", cause, err)
	}
	p.Restore()

	// With Redis unreachable, Process fails without running fn.
	p.Cut()
	var runs atomic.Int64
	if _, err := b.store.Process(context.Background(), dedup.Request{Group: "g", Key: "other"}, counter(&runs)); err == nil || runs.Load() != 0 {
		t.Fatalf("err = %v, runs = %d; want an error and no run", err, runs.Load())
	}
}

// TestLeaseMarkDoneFailsAfterForeignTakeover: fn ignores its context and
// returns nil after the key was taken; nothing is marked done.
func TestLeaseMarkDoneFailsAfterForeignTakeover(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	rk := redisKey(b.prefix, kindLease, "g", "k")
	foreign := valueClaim + "successor"
	_, err := b.store.Process(context.Background(), dedup.Request{Group: "g", Key: "k"}, func(context.Context) error {
		return b.client.Set(context.Background(), rk, foreign, time.Minute).Err()
	})
	if !errors.Is(err, dedup.ErrLeaseLost) {
		t.Fatalf("err = %v, want ErrLeaseLost", err)
	}
	if v := b.value(t, "g", "k"); v != foreign {
		t.Fatalf("key holds %q, want %q", v, foreign)
	}
}

func TestLeaseDeadMarks(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	ctx := context.Background()
	var runs atomic.Int64
	req := dedup.Request{Group: "g", Key: "k"}

	if err := b.store.MarkDead(ctx, "g", "k"); err != nil {
		t.Fatal(err)
	}
	res := mustProcess(t, b.store, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || !res.Dead {
		t.Fatalf("got %+v, want a dead Duplicate", res)
	}
	if err := b.store.ClearDead(ctx, "g", "k"); err != nil {
		t.Fatal(err)
	}
	if res := mustProcess(t, b.store, req, counter(&runs)); res.Outcome != dedup.Processed || runs.Load() != 1 {
		t.Fatalf("after ClearDead: got %+v, runs %d", res, runs.Load())
	}

	// Done stays done: MarkDead does not overwrite it, ClearDead does
	// not remove it.
	if err := b.store.MarkDead(ctx, "g", "k"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.ClearDead(ctx, "g", "k"); err != nil {
		t.Fatal(err)
	}
	res = mustProcess(t, b.store, req, counter(&runs))
	if res.Outcome != dedup.Duplicate || res.Dead {
		t.Fatalf("got %+v, want a plain Duplicate", res)
	}

	// ClearDead leaves a live claim alone; MarkDead replaces it and the
	// owner's completion is rejected.
	other := dedup.Request{Group: "g", Key: "claimed"}
	h := hold(t, b.store, other, nil)
	h.started(t)
	claim := b.value(t, "g", "claimed")
	if err := b.store.ClearDead(ctx, "g", "claimed"); err != nil {
		t.Fatal(err)
	}
	if v := b.value(t, "g", "claimed"); v != claim {
		t.Fatalf("ClearDead changed a claim to %q", v)
	}
	if err := b.store.MarkDead(ctx, "g", "claimed"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.finish(); !errors.Is(err, dedup.ErrLeaseLost) {
		t.Fatalf("owner of a key marked dead: err = %v, want ErrLeaseLost", err)
	}
	if v := b.value(t, "g", "claimed"); v != valueDead {
		t.Fatalf("key holds %q, want the dead mark", v)
	}

	if err := b.store.MarkDead(ctx, "", "k"); !errors.Is(err, dedup.ErrEmptyGroup) {
		t.Fatalf("MarkDead with empty group: err = %v", err)
	}
}

func TestLeaseForeignValue(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	if err := b.client.Set(context.Background(), redisKey(b.prefix, kindLease, "g", "k"), "garbage", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	if _, err := b.store.Process(context.Background(), dedup.Request{Group: "g", Key: "k"}, counter(&runs)); err == nil || runs.Load() != 0 {
		t.Fatalf("err = %v, runs = %d; want an error and no run", err, runs.Load())
	}
}

func TestLeaseRejectsBadRequests(t *testing.T) {
	b := setupLease(t, newRedis(t), LeaseConfig{})
	var runs atomic.Int64
	if _, err := b.store.Process(context.Background(), dedup.Request{Key: "k"}, counter(&runs)); !errors.Is(err, dedup.ErrEmptyGroup) {
		t.Fatalf("err = %v", err)
	}
	if _, err := b.store.Process(context.Background(), dedup.Request{Group: "g", Key: "k"}, nil); !errors.Is(err, dedup.ErrNilFunc) {
		t.Fatalf("err = %v", err)
	}
	if runs.Load() != 0 {
		t.Fatal("fn ran for a bad request")
	}
}

func TestNewLeaseStoreConfigErrors(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = client.Close() })
	var nilClient *redis.Client
	tests := []struct {
		name   string
		client redis.UniversalClient
		cfg    LeaseConfig
		is     error
	}{
		{"nil client", nil, LeaseConfig{}, nil},
		{"typed nil client", nilClient, LeaseConfig{}, nil},
		{"short lease", client, LeaseConfig{Lease: time.Millisecond}, nil},
		{"negative lease", client, LeaseConfig{Lease: -time.Second}, nil},
		{"short retention", client, LeaseConfig{Retention: dedup.Retention{Keep: time.Hour}}, dedup.ErrRetentionTooShort},
		{"negative retention", client, LeaseConfig{Retention: dedup.Retention{RedriveWindow: -time.Hour}}, nil},
		{"timeout over a third of the lease", client, LeaseConfig{Lease: time.Second, Timeout: time.Second}, nil},
		{"negative timeout", client, LeaseConfig{Timeout: -time.Second}, nil},
		{"hash tag in prefix", client, LeaseConfig{KeyPrefix: "x{y}"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewLeaseStore(tt.client, tt.cfg)
			if err == nil {
				t.Fatalf("NewLeaseStore returned %v and no error", s)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
		})
	}
	s, err := NewLeaseStore(client, LeaseConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if s.lease != 30*time.Second || s.call.timeout != time.Second || s.keep != 7*24*time.Hour || s.prefix != DefaultKeyPrefix {
		t.Fatalf("defaults: lease %s timeout %s keep %s prefix %q", s.lease, s.call.timeout, s.keep, s.prefix)
	}
	s, err = NewLeaseStore(client, LeaseConfig{Lease: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.call.timeout != 100*time.Millisecond {
		t.Fatalf("default timeout for a 300ms lease = %s, want a third of it", s.call.timeout)
	}
}
