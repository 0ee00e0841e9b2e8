package dedup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// LeaseKeeper holds a claimed lease while a handler runs, for the lease-mode
// stores (the SQL store in lease mode and the Redis lease store share it, so
// they behave the same). It keeps these rules:
//
//   - The handler's context ends Margin before the lease could expire,
//     counted from the moment the claim (or the last confirmed renewal) was
//     SENT, not from when its answer came back: the store starts the lease
//     no earlier than it receives the statement, so the handler stops before
//     any successor can take the key over.
//   - The context ends by the clock itself. Its Err method compares the
//     clock with the deadline, so a process resumed after a pause (SIGSTOP,
//     a long GC pause, a frozen VM) sees ctx.Err() != nil on its first look,
//     before any timer or renewal goroutine has had a chance to run. So do
//     contexts derived from it with context.WithValue; contexts derived
//     with WithCancel or WithTimeout end when its timer fires, an instant
//     later. Check the handler's own context right before an external
//     effect, and pass the fencing token on for the instant after.
//   - The lease is renewed every RenewEvery, independently of the delivery
//     context: cancelling the delivery cancels the handler's context but
//     does not stop renewals, which continue until the handler returns. A
//     renewal that fails, reports the key taken, or is confirmed only after
//     the deadline ends the handler's context at once, with a cause
//     wrapping [ErrLeaseLost].
//   - The handler's context carries the claim's fencing token (see [Fence]).
//     Its Deadline method reports the current deadline, which moves later
//     with every confirmed renewal.
//
// A LeaseKeeper is a value; its zero fields take the defaults in their
// comments. It is safe to use from several goroutines at once.
type LeaseKeeper struct {
	// Lease is how long the store keeps a claim or renewal alive, counted
	// from when it receives the statement. Required.
	Lease time.Duration
	// Margin is how long before the lease could expire the handler's
	// context ends: room for clock-rate differences between this process
	// and the store, and for the handler's last check of its context before
	// it acts. Defaults to Lease/5.
	Margin time.Duration
	// RenewEvery is the time from one renewal's send to the next one's. A
	// negative value disables renewal: the handler's context then ends at
	// Lease-Margin after the claim was sent. Defaults to Lease/3.
	RenewEvery time.Duration
	// Renew extends the lease by Lease for the claim's owner. It returns nil
	// when the store confirmed the extension, an error wrapping
	// ErrLeaseLost when another owner holds the key, and any other error
	// when it could not tell. Its context ends at the handler's current
	// deadline (an answer after it is useless) or when the handler returns.
	// Required unless RenewEvery is negative.
	Renew func(ctx context.Context) error
	// OnLost, if set, is called once, from a renewal or timer goroutine or
	// from Run, with the cause when the lease ends before the handler
	// returns. Stores use it to log.
	OnLost func(cause error)
}

// withDefaults returns k with zero fields set to their defaults.
func (k LeaseKeeper) withDefaults() LeaseKeeper {
	if k.Margin == 0 {
		k.Margin = k.Lease / 5
	}
	if k.RenewEvery == 0 {
		k.RenewEvery = k.Lease / 3
	}
	return k
}

// Validate reports whether k, with its defaults applied, can keep a lease:
// a positive Lease, a Margin in [0, Lease), and a renewal that is sent
// before the handler's deadline (RenewEvery < Lease-Margin) through a
// non-nil Renew.
func (k LeaseKeeper) Validate() error {
	k = k.withDefaults()
	switch {
	case k.Lease <= 0:
		return fmt.Errorf("dedup: lease %s must be positive", k.Lease)
	case k.Margin < 0 || k.Margin >= k.Lease:
		return fmt.Errorf("dedup: lease margin %s must be in [0, %s)", k.Margin, k.Lease)
	case k.RenewEvery > 0 && k.RenewEvery >= k.Lease-k.Margin:
		return fmt.Errorf("dedup: renewal every %s comes after the handler's deadline (lease %s minus margin %s)",
			k.RenewEvery, k.Lease, k.Margin)
	case k.RenewEvery > 0 && k.Renew == nil:
		return errors.New("dedup: lease keeper without a Renew func")
	}
	return nil
}

// Run runs fn under the lease whose claim was sent at sentAt and handed out
// the fencing token fence. fn's context is derived from ctx (its values,
// and its cancellation) and ends as the LeaseKeeper doc says; it has ended
// by the time Run returns, and renewals have stopped.
//
// Run returns fn's error unchanged, and lost: nil if the lease held until
// fn returned, otherwise the cause (wrapping ErrLeaseLost) it ended with.
// A lost lease does not prove that another owner took the key; the store's
// owner-checked completion decides that. If fn panics, renewals stop and
// the panic goes on. An invalid k returns Validate's error as fnErr
// without calling fn.
func (k LeaseKeeper) Run(ctx context.Context, sentAt time.Time, fence uint64, fn Func) (fnErr, lost error) {
	if err := k.Validate(); err != nil {
		return err, nil
	}
	k = k.withDefaults()
	lc := newLeaseContext(ctx, fence, sentAt.Add(k.Lease-k.Margin), k.OnLost)
	// Renewals answer to the handler only: not to the delivery context.
	rctx, rstop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if k.RenewEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.renew(rctx, lc, sentAt)
		}()
	}
	defer func() {
		lost = lc.finish()
		rstop()
		wg.Wait()
	}()
	return fn(lc), nil
}

// renew extends the lease until the handler returns (ctx ends) or the lease
// is lost.
func (k LeaseKeeper) renew(ctx context.Context, lc *leaseContext, lastSent time.Time) {
	t := time.NewTimer(time.Until(lastSent.Add(k.RenewEvery)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		cctx, cancel := context.WithDeadline(ctx, lc.until())
		err := k.Renew(cctx)
		cancel()
		if ctx.Err() != nil {
			return // the handler returned meanwhile
		}
		if err != nil {
			if !time.Now().Before(lc.until()) {
				// The answer did not come before the deadline.
				lc.lose(errLeaseExpired, true)
				return
			}
			if !errors.Is(err, ErrLeaseLost) {
				err = fmt.Errorf("%w: renewal failed: %w", ErrLeaseLost, err)
			}
			lc.lose(err, false)
			return
		}
		if !lc.extend(sent.Add(k.Lease - k.Margin)) {
			return
		}
		t.Reset(time.Until(sent.Add(k.RenewEvery)))
	}
}

// Fence returns the fencing token of the lease under which ctx's handler
// runs, and whether there is one. The token is a number that grows with
// every new owner of a key: an owner that takes over a key gets a greater
// token than the owner it replaced, and no owner ever gets a lower token
// than an earlier one. Pass it to an external API that remembers the
// highest token it has seen per key and refuses lower ones: then a stale
// owner (a process paused past its lease, then resumed) cannot act after
// its successor, even between its last check of ctx and its request.
func Fence(ctx context.Context) (uint64, bool) {
	f, ok := ctx.Value(fenceKey{}).(uint64)
	return f, ok
}

type fenceKey struct{}

// errLeaseExpired is the cause of a handler context that outlived its lease
// without a confirmed renewal.
var errLeaseExpired = fmt.Errorf("%w: no renewal was confirmed in time; the lease could expire", ErrLeaseLost)

// errHandlerReturned is the cause of a handler context ended because the
// handler returned.
var errHandlerReturned = errors.New("dedup: the handler returned")

// leaseContext is a handler's context in lease mode. Done, Err and Cause
// come from an inner cancel context; Err also compares the clock with the
// deadline, and ends the context when it has passed, so that an expired
// lease is seen without waiting for the timer. Deadline reports the current
// deadline, which moves later with every confirmed renewal.
type leaseContext struct {
	parent context.Context // values and cancellation of the delivery
	inner  context.Context // Done and cause; a child of Background
	cancel context.CancelCauseFunc
	fence  uint64
	onLost func(error)
	stopAF func() bool

	// base is when the context was made, with its monotonic clock
	// reading; deadline is the lease's end as nanoseconds after base, so
	// that every comparison reads the monotonic clock: a wall clock
	// stepped back (NTP, a VM resumed) neither keeps the context alive past
	// its lease nor, stepped forward, ends it early.
	base     time.Time
	deadline atomic.Int64 // ns after base, for Err's lock-free check
	expired  atomic.Bool  // ended by the clock: Err says DeadlineExceeded

	mu       sync.Mutex
	timer    *time.Timer
	lost     error // why the lease ended, if it did before finish
	finished bool
}

func newLeaseContext(parent context.Context, fence uint64, until time.Time, onLost func(error)) *leaseContext {
	inner, cancel := context.WithCancelCause(context.Background())
	c := &leaseContext{parent: parent, inner: inner, cancel: cancel, fence: fence, onLost: onLost, base: time.Now()}
	c.deadline.Store(int64(until.Sub(c.base)))
	c.mu.Lock()
	c.timer = time.AfterFunc(time.Until(until), c.tick)
	c.mu.Unlock()
	c.stopAF = context.AfterFunc(parent, func() { cancel(context.Cause(parent)) })
	return c
}

func (c *leaseContext) Deadline() (time.Time, bool) {
	d := c.until()
	if pd, ok := c.parent.Deadline(); ok && pd.Before(d) {
		d = pd
	}
	return d, true
}

func (c *leaseContext) Done() <-chan struct{} { return c.inner.Done() }

func (c *leaseContext) Err() error {
	if c.inner.Err() == nil && c.passed() {
		c.lose(errLeaseExpired, true)
	}
	if c.inner.Err() == nil {
		return nil
	}
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	return context.Canceled
}

func (c *leaseContext) Value(key any) any {
	if _, ok := key.(fenceKey); ok {
		return c.fence
	}
	// The inner context answers for the cancel machinery (context.Cause,
	// children that propagate cancellation); the delivery for the rest.
	if v := c.inner.Value(key); v != nil {
		return v
	}
	return c.parent.Value(key)
}

func (c *leaseContext) String() string { return "dedup.leaseContext" }

// until returns the current deadline, with a monotonic clock reading.
func (c *leaseContext) until() time.Time { return c.base.Add(time.Duration(c.deadline.Load())) }

// passed reports whether the deadline has passed, by the monotonic clock.
func (c *leaseContext) passed() bool { return int64(time.Since(c.base)) >= c.deadline.Load() }

// tick runs when the timer fires: it ends the context if the deadline has
// passed, or re-arms the timer for a deadline a renewal moved.
func (c *leaseContext) tick() {
	c.mu.Lock()
	if c.finished || c.lost != nil {
		c.mu.Unlock()
		return
	}
	if d := time.Until(c.until()); d > 0 {
		c.timer.Reset(d)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.lose(errLeaseExpired, true)
}

// lose records that the lease ended with cause and ends the context. The
// first cause wins; nothing happens after finish.
func (c *leaseContext) lose(cause error, byClock bool) {
	c.mu.Lock()
	if c.finished || c.lost != nil {
		c.mu.Unlock()
		return
	}
	c.lost = cause
	c.timer.Stop()
	if byClock && c.inner.Err() == nil {
		c.expired.Store(true)
	}
	c.cancel(cause)
	c.mu.Unlock()
	if c.onLost != nil {
		c.onLost(cause)
	}
}

// extend moves the deadline to until after a confirmed renewal. It returns
// false, and changes nothing, if the lease already ended (by the clock: a
// renewal confirmed after the deadline does not revive it).
func (c *leaseContext) extend(until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished || c.lost != nil {
		return false
	}
	if c.passed() {
		return false // Err or the timer will end it
	}
	if d := int64(until.Sub(c.base)); d > c.deadline.Load() {
		c.deadline.Store(d)
		c.timer.Reset(time.Until(until))
	}
	return true
}

// finish ends the context because the handler returned and reports whether
// the lease ended before.
func (c *leaseContext) finish() error {
	if c.passed() {
		c.lose(errLeaseExpired, true)
	}
	c.mu.Lock()
	c.finished = true
	c.timer.Stop()
	lost := c.lost
	c.cancel(errHandlerReturned)
	c.mu.Unlock()
	c.stopAF()
	return lost
}
