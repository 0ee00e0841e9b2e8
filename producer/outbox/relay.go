package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idemq/idemq/internal/gate"
)

// Relay moves rows from the outbox to the broker. Several relays may run
// against one outbox at once, in one process or many.
//
// NewRelay builds a Relay and checks its configuration; Start starts its
// loop; Shutdown stops it. RunOnce and SendNow work with or without the
// loop, until Shutdown.
type Relay struct {
	ob     *Outbox
	sender Sender
	cfg    RelayConfig
	wake   chan struct{}
	seq    atomic.Int64

	gate     *gate.Gate
	stop     context.CancelFunc // ends the loop; set by Start
	loopDone chan struct{}      // closed when the loop returned

	claimed, sent, failures, failed, lost, released atomic.Int64

	// skipMark, when set by tests, is asked after a successful send;
	// returning true leaves the row unmarked, as if the relay died
	// between send and mark.
	skipMark func(messageID string) bool
}

// NewRelay returns a relay that sends ob's rows through sender.
func NewRelay(ob *Outbox, sender Sender, cfg RelayConfig) (*Relay, error) {
	if ob == nil {
		return nil, errors.New("outbox: nil outbox")
	}
	if sender == nil {
		return nil, errors.New("outbox: nil sender")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Relay{
		ob:     ob,
		sender: sender,
		cfg:    cfg,
		wake:   make(chan struct{}, 1),
		gate:   gate.New(ErrClosed, nil),
	}, nil
}

// Start checks that the outbox table exists and starts the relay's loop:
// it claims and sends due rows, waits PollInterval after a claim that
// found less than a full batch (or until Notify), logs database errors
// and retries them with a growing pause, and deletes sent rows older than
// Retention every CleanupInterval. ctx bounds the check, not the loop,
// which runs until Shutdown. Start is idempotent; after Shutdown it
// returns ErrClosed.
func (r *Relay) Start(ctx context.Context) error {
	return r.gate.Start(ctx, func(ctx context.Context) error {
		if !r.ob.db.WithContext(ctx).Migrator().HasTable(r.ob.table) {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("outbox: relay %s: table %s does not exist; run Migrate (or idemq migrate)", r.cfg.ID, r.ob.table)
		}
		loop, stop := context.WithCancel(context.Background())
		r.stop = stop
		r.loopDone = make(chan struct{})
		go func() {
			defer close(r.loopDone)
			r.run(loop)
		}()
		return nil
	})
}

// Shutdown stops the loop: the row being sent is finished and marked, the
// rest of its batch is released unsent (no attempt counted), and Shutdown
// returns once the loop has returned. Shutdown is idempotent and safe to
// call concurrently; every call returns the first call's result once it
// is done (or its own ctx's error if that comes first). It may be called
// without Start.
func (r *Relay) Shutdown(ctx context.Context) error {
	return r.gate.Shutdown(ctx, func() error {
		r.stop()
		<-r.loopDone
		return nil
	})
}

// ID returns the relay's ID.
func (r *Relay) ID() string { return r.cfg.ID }

// Notify wakes a started relay's loop so that it claims at once instead of
// waiting for its poll interval. Call it after committing a transaction
// that enqueued messages. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run is the loop Start starts: it claims and sends due rows until ctx is
// done, then releases what it claimed and has not sent, and returns once
// the sends in flight finished and were recorded.
//
// The loop keeps up to SendWindow sends in flight across batches: it goes
// on to its next batch as soon as every row of the current one was
// started, and after a full batch it claims the next one while the current
// one is being started, so the window does not drain between batches.
func (r *Relay) run(ctx context.Context) {
	var (
		lastCleanup time.Time
		errDelay    = r.cfg.PollInterval
		win         = make(chan struct{}, r.cfg.SendWindow)
		batches     sync.WaitGroup
		prefetch    chan claimResult // the next batch's claim, when one is running
	)
	defer batches.Wait()
	for {
		var c claimed
		var err error
		if prefetch != nil {
			res := <-prefetch
			prefetch = nil
			c, err = res.c, res.err
		} else if ctx.Err() == nil {
			c, err = r.claim(ctx, nil)
		}
		if ctx.Err() != nil {
			if err == nil {
				r.release(ctx, c.rows, c.token)
			}
			return
		}
		wait := r.cfg.PollInterval
		switch {
		case err != nil:
			r.ob.log.Error("outbox relay: claim failed", "relay", r.cfg.ID, "err", err)
			wait = errDelay
			errDelay = min(2*errDelay+time.Millisecond, 30*time.Second)
		default:
			errDelay = r.cfg.PollInterval
			if len(c.rows) >= r.cfg.BatchSize {
				wait = 0
				prefetch = make(chan claimResult, 1)
				go func() {
					c, err := r.claim(ctx, nil)
					prefetch <- claimResult{c, err}
				}()
			}
			if len(c.rows) > 0 {
				done := r.startBatch(ctx, c, win)
				batches.Add(1)
				go func() {
					defer batches.Done()
					<-done
				}()
			}
		}
		if r.cfg.Retention > 0 && time.Since(lastCleanup) >= r.cfg.CleanupInterval && ctx.Err() == nil {
			lastCleanup = time.Now()
			if _, err := r.ob.Cleanup(ctx, r.cfg.Retention, r.cfg.CleanupBatch); err != nil && ctx.Err() == nil {
				r.ob.log.Error("outbox relay: cleanup failed", "relay", r.cfg.ID, "err", err)
			}
		}
		if wait == 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// claimResult is the outcome of a claim made ahead of its batch.
type claimResult struct {
	c   claimed
	err error
}

// RunOnce claims one batch of due rows, sends each, and records the
// outcomes, with or without Start. It returns the number of rows claimed.
// Send failures are recorded on the rows, not returned; the error is a
// database error, or ErrClosed after Shutdown (which waits for RunOnce
// calls in flight).
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	if err := r.gate.Enter(); err != nil {
		return 0, err
	}
	defer r.gate.Leave()
	return r.runOnce(ctx)
}

// runOnce is RunOnce for the relay's own loop.
func (r *Relay) runOnce(ctx context.Context) (int, error) {
	c, err := r.claim(ctx, nil)
	if err != nil {
		return 0, err
	}
	r.process(ctx, c)
	return len(c.rows), nil
}

// SendNow claims the rows with the given message IDs, if they are due and
// no relay holds them, and sends them at once; it returns how many were
// sent. Call it after the enqueuing transaction committed, for low
// latency; rows it skips or fails to send are left to the relays, as
// usual. It claims like a relay, so a row is never sent by both in the
// normal case. It works with or without Start, and returns ErrClosed after
// Shutdown (which waits for SendNow calls in flight).
func (r *Relay) SendNow(ctx context.Context, messageIDs ...string) (int, error) {
	if err := r.gate.Enter(); err != nil {
		return 0, err
	}
	defer r.gate.Leave()
	if len(messageIDs) == 0 {
		return 0, nil
	}
	c, err := r.claim(ctx, messageIDs)
	if err != nil {
		return 0, err
	}
	return r.process(ctx, c), nil
}
