package deduptest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
)

// LeasedStore is a lease-mode store whose connection to its database or
// Redis a test can stall, for Subject.Leased.
type LeasedStore struct {
	// Store works on the subject's rows or keys with the lease it was made
	// with, renewed as the store renews.
	Store dedup.Store
	// Stall makes the store's database or Redis stop answering (no error,
	// no closed connection: a paused server or a partition) until the
	// returned resume func is called.
	Stall func() (resume func())
}

// leaseCases are the lease-fencing cases (see DESIGN-NOTES "A lease ends
// before it can expire"), registered in Run.
var leaseCases = []struct {
	name string
	fn   func(t *testing.T, s Subject)
}{
	{"LeasePausedHolderEndsBeforeSuccessor", testLeasePaused},
	{"LeaseFenceGrowsWithEveryOwner", testLeaseFence},
	{"LeaseDeadlineCountsFromSend", testLeaseDeadlineFromSend},
	{"LeaseStalledRenewalEndsHandler", testLeaseStalledRenewal},
	{"LeaseDeliveryCancelKeepsRenewing", testLeaseDeliveryCancel},
}

func needZombie(t *testing.T, s Subject) {
	t.Helper()
	if s.Mode != dedup.Lease {
		t.Skip("applies to lease-mode stores")
	}
	s.need(t, "Zombie", s.Zombie != nil)
}

func needLeased(t *testing.T, s Subject) {
	t.Helper()
	if s.Mode != dedup.Lease {
		t.Skip("applies to lease-mode stores")
	}
	s.need(t, "Leased", s.Leased != nil)
}

// held is a delivery whose handler has started and waits to be resumed.
type held struct {
	ctx    context.Context
	resume chan struct{}
	done   chan error
}

// holdKey runs a delivery of key on st in the background; its handler
// reports its context, waits for resume, then runs then with that context.
func holdKey(t *testing.T, st dedup.Store, key string, then func(ctx context.Context) error) *held {
	t.Helper()
	h := &held{resume: make(chan struct{}), done: make(chan error, 1)}
	started := make(chan context.Context, 1)
	go func() {
		res, err := st.Process(context.Background(), req(group, key), func(ctx context.Context) error {
			started <- ctx
			<-h.resume
			return then(ctx)
		})
		if err == nil && res.Outcome != dedup.Processed {
			err = errors.New("outcome " + res.Outcome.String())
		}
		h.done <- err
	}()
	select {
	case h.ctx = <-started:
	case err := <-h.done:
		t.Fatalf("the held delivery did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the held delivery did not start within 30s")
	}
	return h
}

// testLeasePaused: a holder paused past its lease (its renewals stopped
// with it: a Zombie) and then resumed finds its context ended before its
// successor's handler starts, and its token is lower than the successor's.
func testLeasePaused(t *testing.T, s Subject) {
	needZombie(t, s)
	key := uniqueKey("paused")
	var zombieActed bool
	z := holdKey(t, s.Zombie(t), key, func(ctx context.Context) error {
		if ctx.Err() == nil {
			zombieActed = true
		}
		return nil
	})
	var zombieErrAtSuccessor error
	var sfence uint64
	res, err := settle(t, s.Store, req(group, key), func(ctx context.Context) error {
		// The successor starts: the paused holder has not run since its
		// pause, yet its context must already say it is over.
		zombieErrAtSuccessor = z.ctx.Err()
		sfence, _ = dedup.Fence(ctx)
		return nil
	})
	mustOutcome(t, res, err, dedup.Processed)
	if zombieErrAtSuccessor == nil {
		t.Fatal("the successor started while the paused holder's context was live")
	}
	zfence, ok := dedup.Fence(z.ctx)
	if !ok {
		t.Fatal("the paused holder's context carries no fencing token")
	}
	if sfence <= zfence {
		t.Fatalf("successor's fencing token %d is not above the paused holder's %d", sfence, zfence)
	}
	close(z.resume)
	if err := <-z.done; !errors.Is(err, dedup.ErrLeaseLost) {
		t.Fatalf("resumed holder: %v, want dedup.ErrLeaseLost", err)
	}
	if zombieActed {
		t.Fatal("the resumed holder found its context live and acted after its successor")
	}
}

// testLeaseFence: every new owner of a key gets a token above the owner
// whose lease it took over, and never below an earlier one.
func testLeaseFence(t *testing.T, s Subject) {
	needZombie(t, s)
	key := uniqueKey("fence")
	var tokens []uint64
	record := func(ctx context.Context) {
		f, ok := dedup.Fence(ctx)
		if !ok {
			t.Fatal("handler context without a fencing token")
		}
		tokens = append(tokens, f)
	}
	// Owner 1 stalls past its lease; owner 2 takes over and fails
	// (releasing the key); owner 3 claims anew and succeeds.
	z := holdKey(t, s.Zombie(t), key, func(context.Context) error { return nil })
	record(z.ctx)
	failed := errors.New("owner 2 failed")
	_, err := settle(t, s.Store, req(group, key), func(ctx context.Context) error {
		record(ctx)
		return failed
	})
	if err != failed {
		t.Fatalf("owner 2: %v, want its handler's error", err)
	}
	res, err := settle(t, s.Store, req(group, key), func(ctx context.Context) error {
		record(ctx)
		return nil
	})
	mustOutcome(t, res, err, dedup.Processed)
	close(z.resume)
	<-z.done
	if len(tokens) != 3 {
		t.Fatalf("tokens %v, want three owners", tokens)
	}
	if tokens[1] <= tokens[0] {
		t.Fatalf("tokens %v: the takeover did not get a greater token", tokens)
	}
	if tokens[2] < tokens[1] {
		t.Fatalf("tokens %v: a later owner got a lower token", tokens)
	}
	res, err = s.Store.Process(ctxT(t), req(group, key), func(context.Context) error { return nil })
	mustOutcome(t, res, err, dedup.Duplicate)
}

// testLeaseDeadlineFromSend: the claim's answer is held back; the
// handler's deadline still counts from when the claim was sent, so it is
// earlier than the lease can end, however late the answer came.
func testLeaseDeadlineFromSend(t *testing.T, s Subject) {
	needLeased(t, s)
	// The Redis lease store bounds a call by min(1s, lease/3): the held
	// claim must be answered within it, also on a loaded machine.
	const lease, delay = 3 * time.Second, 400 * time.Millisecond
	ls := s.Leased(t, lease)
	key := uniqueKey("fromsend")
	resume := ls.Stall()
	go func() {
		time.Sleep(delay)
		resume()
	}()
	before := time.Now()
	var dl time.Time
	var hasDL bool
	var answered time.Time
	res, err := ls.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		answered = time.Now()
		dl, hasDL = ctx.Deadline()
		return nil
	})
	mustOutcome(t, res, err, dedup.Processed)
	if answered.Sub(before) < delay {
		t.Fatalf("the claim was answered after %s, before the stall ended", answered.Sub(before))
	}
	if !hasDL {
		t.Fatal("the handler's context has no deadline")
	}
	// The store started the lease no earlier than before: it must end
	// later than the handler's deadline, with a margin.
	if latest := before.Add(lease - lease/10); dl.After(latest) {
		t.Fatalf("deadline %s after the claim was sent, want at most %s (counted from the send, with a margin)",
			dl.Sub(before), lease-lease/10)
	}
}

// testLeaseStalledRenewal: the store stops answering while the handler
// runs; the handler's context ends before the lease could expire.
func testLeaseStalledRenewal(t *testing.T, s Subject) {
	needLeased(t, s)
	const lease = 2 * time.Second
	ls := s.Leased(t, lease)
	key := uniqueKey("stalled")
	before := time.Now()
	var ended time.Time
	var cause error
	var resume func()
	_, err := ls.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		resume = ls.Stall()
		select {
		case <-ctx.Done():
		case <-time.After(30 * time.Second):
			resume()
			return errors.New("the handler's context outlived a stalled store by 30s")
		}
		ended = time.Now()
		cause = context.Cause(ctx)
		resume()
		return cause
	})
	if !errors.Is(cause, dedup.ErrLeaseLost) || err != cause {
		t.Fatalf("cause %v, Process error %v; want the handler ended with dedup.ErrLeaseLost", cause, err)
	}
	if latest := before.Add(lease - lease/20); ended.After(latest) {
		t.Fatalf("the handler's context ended %s after the claim was sent, want before %s (the lease could expire at %s)",
			ended.Sub(before), lease-lease/20, lease)
	}
}

// testLeaseDeliveryCancel: the delivery is cancelled while a handler that
// ignores it keeps running for several leases; renewals go on, so another
// delivery stays Busy, and the handler's success is recorded.
func testLeaseDeliveryCancel(t *testing.T, s Subject) {
	needLeased(t, s)
	const lease = time.Second
	ls := s.Leased(t, lease)
	key := uniqueKey("delivcancel")
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	res, err := ls.Store.Process(ctx, req(group, key), func(hctx context.Context) error {
		cancel()
		<-hctx.Done()
		time.Sleep(2 * lease) // the handler finishes its work anyway
		res, err := s.Store.Process(ctxT(t), req(group, key), func(context.Context) error {
			t.Error("a second delivery ran while the first handler still ran")
			return nil
		})
		if err != nil || res.Outcome != dedup.Busy {
			t.Errorf("second delivery while the first handler runs: %+v, %v; want Busy", res, err)
		}
		return nil
	})
	mustOutcome(t, res, err, dedup.Processed)
}
