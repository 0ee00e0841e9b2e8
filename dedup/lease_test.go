package dedup_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
)

// okRenew counts renewals and confirms them.
func okRenew(n *atomic.Int64) func(context.Context) error {
	return func(context.Context) error {
		n.Add(1)
		return nil
	}
}

// A claim sent long ago: the handler's very first look at its context
// finds it ended, by the clock, whatever the timers did.
func TestLeaseKeeperDeadlineCountsFromSend(t *testing.T) {
	const lease = 10 * time.Second
	var renewals atomic.Int64
	k := dedup.LeaseKeeper{Lease: lease, Renew: okRenew(&renewals)}
	sent := time.Now().Add(-lease + lease/10) // the lease still has 1 s, the margin is 2 s
	var firstErr error
	var dl time.Time
	fnErr, lost := k.Run(context.Background(), sent, 7, func(ctx context.Context) error {
		firstErr = ctx.Err()
		dl, _ = ctx.Deadline()
		return nil
	})
	if fnErr != nil {
		t.Fatal(fnErr)
	}
	if !errors.Is(firstErr, context.DeadlineExceeded) {
		t.Fatalf("first ctx.Err() = %v, want DeadlineExceeded: the lease may expire within the margin", firstErr)
	}
	if want := sent.Add(lease - lease/5); !dl.Equal(want) {
		t.Fatalf("deadline %v, want send time + lease - margin = %v", dl, want)
	}
	if !errors.Is(lost, dedup.ErrLeaseLost) {
		t.Fatalf("lost = %v, want ErrLeaseLost", lost)
	}
}

// The context ends at the deadline even if no goroutine looks at it.
func TestLeaseKeeperEndsByTimer(t *testing.T) {
	k := dedup.LeaseKeeper{Lease: 100 * time.Millisecond, RenewEvery: -1}
	start := time.Now()
	var cause error
	_, lost := k.Run(context.Background(), start, 1, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Error("context not ended by its deadline")
		}
		cause = context.Cause(ctx)
		return nil
	})
	if el := time.Since(start); el < 80*time.Millisecond {
		t.Fatalf("context ended after %s, before the deadline", el)
	}
	if !errors.Is(cause, dedup.ErrLeaseLost) || !errors.Is(lost, dedup.ErrLeaseLost) {
		t.Fatalf("cause %v, lost %v; want ErrLeaseLost", cause, lost)
	}
}

// Confirmed renewals move the deadline: a handler running for several
// leases keeps a live context.
func TestLeaseKeeperRenewalsExtend(t *testing.T) {
	const lease = 300 * time.Millisecond
	var renewals atomic.Int64
	k := dedup.LeaseKeeper{Lease: lease, Renew: okRenew(&renewals)}
	fnErr, lost := k.Run(context.Background(), time.Now(), 1, func(ctx context.Context) error {
		end := time.Now().Add(4 * lease)
		for time.Now().Before(end) {
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	if fnErr != nil || lost != nil {
		t.Fatalf("fnErr %v, lost %v after %d renewals", fnErr, lost, renewals.Load())
	}
	if renewals.Load() < 3 {
		t.Fatalf("%d renewals over 4 leases, want about 12", renewals.Load())
	}
}

// A failed renewal ends the context at once, not when the lease runs out.
func TestLeaseKeeperFailedRenewalCancelsAtOnce(t *testing.T) {
	const lease = 3 * time.Second
	failed := make(chan time.Time, 1)
	k := dedup.LeaseKeeper{Lease: lease, RenewEvery: 50 * time.Millisecond, Renew: func(context.Context) error {
		failed <- time.Now()
		return errors.New("connection refused")
	}}
	var ended time.Time
	var cause error
	_, lost := k.Run(context.Background(), time.Now(), 1, func(ctx context.Context) error {
		<-ctx.Done()
		ended = time.Now()
		cause = context.Cause(ctx)
		return nil
	})
	if at := <-failed; ended.Sub(at) > time.Second {
		t.Fatalf("context ended %s after the failed renewal, want at once", ended.Sub(at))
	}
	if !errors.Is(cause, dedup.ErrLeaseLost) || !errors.Is(lost, dedup.ErrLeaseLost) {
		t.Fatalf("cause %v, lost %v; want ErrLeaseLost", cause, lost)
	}
}

// A renewal that never answers (a stalled connection) cannot keep the
// context alive past the deadline counted from the last confirmed send.
func TestLeaseKeeperStalledRenewal(t *testing.T) {
	const lease = time.Second
	k := dedup.LeaseKeeper{Lease: lease, Renew: func(ctx context.Context) error {
		<-ctx.Done() // the keeper bounds the call by the deadline
		return ctx.Err()
	}}
	sent := time.Now()
	var ended time.Time
	k.Run(context.Background(), sent, 1, func(ctx context.Context) error {
		<-ctx.Done()
		ended = time.Now()
		return nil
	})
	if limit := sent.Add(lease - lease/20); ended.After(limit) {
		t.Fatalf("context ended %s after the send, want before the lease could expire (%s)", ended.Sub(sent), lease)
	}
}

// Cancelling the delivery cancels the handler's context but not the
// renewals: they go on until the handler returns.
func TestLeaseKeeperDeliveryCancelKeepsRenewing(t *testing.T) {
	const lease = 300 * time.Millisecond
	var renewals atomic.Int64
	k := dedup.LeaseKeeper{Lease: lease, Renew: okRenew(&renewals)}
	ctx, cancel := context.WithCancel(context.Background())
	var afterCancel int64
	var ctxErr error
	_, lost := k.Run(ctx, time.Now(), 1, func(hctx context.Context) error {
		cancel()
		<-hctx.Done()
		ctxErr = hctx.Err()
		n := renewals.Load()
		time.Sleep(3 * lease) // the handler ignores the cancellation
		afterCancel = renewals.Load() - n
		return nil
	})
	if !errors.Is(ctxErr, context.Canceled) {
		t.Fatalf("handler ctx.Err() = %v, want Canceled", ctxErr)
	}
	if afterCancel < 2 || lost != nil {
		t.Fatalf("%d renewals after the delivery was cancelled, lost %v; want renewals to go on", afterCancel, lost)
	}
}

// The context carries the fence, the delivery's values, and ends when Run
// returns; children derived from it end with it.
func TestLeaseKeeperContext(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	if _, ok := dedup.Fence(ctx); ok {
		t.Fatal("Fence outside a lease reported a token")
	}
	var hctx, child context.Context
	var cancelChild context.CancelFunc
	k := dedup.LeaseKeeper{Lease: time.Minute, RenewEvery: -1}
	k.Run(ctx, time.Now(), 42, func(c context.Context) error {
		hctx = c
		child, cancelChild = context.WithCancel(c)
		if f, ok := dedup.Fence(child); !ok || f != 42 {
			t.Errorf("Fence = %d, %v; want 42", f, ok)
		}
		if c.Value(key{}) != "v" {
			t.Error("the delivery's values are lost")
		}
		if c.Err() != nil {
			t.Errorf("live context: Err = %v", c.Err())
		}
		return nil
	})
	if hctx.Err() == nil || child.Err() == nil {
		t.Fatalf("after Run: Err = %v, child Err = %v; want both ended", hctx.Err(), child.Err())
	}
	cancelChild()
}

// A panicking handler stops the renewals (even one in flight) before the
// panic leaves Run.
func TestLeaseKeeperPanic(t *testing.T) {
	var inFlight atomic.Int64
	started := make(chan struct{}, 1)
	k := dedup.LeaseKeeper{Lease: 10 * time.Second, RenewEvery: 10 * time.Millisecond, Renew: func(ctx context.Context) error {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		k.Run(context.Background(), time.Now(), 1, func(context.Context) error {
			<-started
			panic("boom")
		})
	}()
	if n := inFlight.Load(); n != 0 {
		t.Fatalf("%d renewals still running after the panic left Run", n)
	}
}

func TestLeaseKeeperValidate(t *testing.T) {
	renew := func(context.Context) error { return nil }
	for _, k := range []dedup.LeaseKeeper{
		{},
		{Lease: time.Second, Margin: time.Second, Renew: renew},
		{Lease: time.Second, RenewEvery: 900 * time.Millisecond, Renew: renew},
		{Lease: time.Second},
	} {
		if err := k.Validate(); err == nil {
			t.Errorf("%+v accepted", k)
		}
	}
	if err := (dedup.LeaseKeeper{Lease: time.Second, Renew: renew}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (dedup.LeaseKeeper{Lease: time.Second, RenewEvery: -1}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// A renewal confirmed only after the deadline does not revive the lease.
func TestLeaseKeeperLateRenewalDoesNotRevive(t *testing.T) {
	const lease = 300 * time.Millisecond
	confirmed := make(chan struct{})
	k := dedup.LeaseKeeper{Lease: lease, Renew: func(ctx context.Context) error {
		dl, _ := ctx.Deadline()
		time.Sleep(time.Until(dl) + 50*time.Millisecond) // ignores ctx, then says yes
		select {
		case <-confirmed:
		default:
			close(confirmed)
		}
		return nil
	}}
	var after error
	_, lost := k.Run(context.Background(), time.Now(), 1, func(ctx context.Context) error {
		<-confirmed
		after = ctx.Err()
		return nil
	})
	if after == nil || !errors.Is(lost, dedup.ErrLeaseLost) {
		t.Fatalf("after a late confirmation: Err %v, lost %v; want the lease ended", after, lost)
	}
}
