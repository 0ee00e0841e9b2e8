package middleware

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// delivery is the per-delivery state that middlewares of one chain share
// through the context. A middleware that reads the state after the inner
// handler returns (DeadLetter, Logging, Metrics, Tracing) creates it if no
// outer middleware did; a middleware that only writes it (Dedup, Attempts)
// writes only when it exists, since otherwise nobody outside would read it.
//
// The fields are written by middleware running on the delivery's goroutine;
// the mutex keeps a handler that leaks the context into other goroutines
// from racing with them.
type delivery struct {
	mu sync.Mutex
	// result is Dedup's decision, if Dedup ran and the store answered.
	result *dedup.Result
	// attempts is the latest durable failure record written by Attempts.
	attempts *dedup.Attempts
	// deadLetterID is set by DeadLetter once the message is buried.
	deadLetterID int64
	deadLettered bool
	// handlerTime is how long the handler alone ran inside Dedup's store
	// call; ranHandler is set once it ran.
	handlerTime time.Duration
	ranHandler  bool
}

func (d *delivery) setHandlerTime(t time.Duration) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.handlerTime, d.ranHandler = t, true
	d.mu.Unlock()
}

// handlerRun returns how long the handler alone ran, if Dedup ran it.
func (d *delivery) handlerRun() (time.Duration, bool) {
	if d == nil {
		return 0, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.handlerTime, d.ranHandler
}

type deliveryKey struct{}

// ensureDelivery returns the delivery state carried by ctx, creating it
// (and a context carrying it) if there is none.
func ensureDelivery(ctx context.Context) (context.Context, *delivery) {
	if d := deliveryFrom(ctx); d != nil {
		return ctx, d
	}
	d := &delivery{}
	return context.WithValue(ctx, deliveryKey{}, d), d
}

// deliveryFrom returns the delivery state carried by ctx, or nil.
func deliveryFrom(ctx context.Context) *delivery {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	return d
}

func (d *delivery) setResult(r dedup.Result) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.result = &r
	d.mu.Unlock()
}

func (d *delivery) setAttempts(a dedup.Attempts) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.attempts = &a
	d.mu.Unlock()
}

func (d *delivery) setDeadLetter(id int64) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.deadLettered = true
	d.deadLetterID = id
	d.mu.Unlock()
}

// snapshot returns copies of the state's fields.
func (d *delivery) snapshot() (res *dedup.Result, att *dedup.Attempts, dead bool, deadID int64) {
	if d == nil {
		return nil, nil, false, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.result != nil {
		r := *d.result
		res = &r
	}
	if d.attempts != nil {
		a := *d.attempts
		a.History = append([]dedup.AttemptError(nil), d.attempts.History...)
		att = &a
	}
	return res, att, d.deadLettered, d.deadLetterID
}

// Outcomes reported by Logging, Metrics and Tracing for a delivery.
const (
	// OutcomeProcessed: the handler ran and succeeded (or no Dedup
	// middleware was in the chain and the chain returned nil).
	OutcomeProcessed = "processed"
	// OutcomeDuplicate: Dedup found the key done (or dead) and acknowledged
	// the delivery without calling the handler.
	OutcomeDuplicate = "duplicate"
	// OutcomeBusy: another owner holds the key's lease; the delivery is
	// redelivered later and is not a failed attempt.
	OutcomeBusy = "busy"
	// OutcomeDeadLetter: the message was buried as a dead letter and
	// acknowledged.
	OutcomeDeadLetter = "dead_letter"
	// OutcomePermanent: the chain returned a permanent error that no
	// DeadLetter middleware handled; the transport decides what to do.
	OutcomePermanent = "permanent"
	// OutcomeRetry: the chain returned a retryable error; the transport
	// redelivers the message.
	OutcomeRetry = "retry"
)

// outcome classifies a finished delivery from the chain's error and the
// delivery state.
func outcome(d *delivery, err error) string {
	res, _, dead, _ := d.snapshot()
	switch {
	case err == nil && dead:
		return OutcomeDeadLetter
	case err == nil && res != nil && res.Outcome == dedup.Duplicate:
		return OutcomeDuplicate
	case err == nil:
		return OutcomeProcessed
	case errors.Is(err, dedup.ErrBusy):
		return OutcomeBusy
	case idemq.IsPermanent(err):
		return OutcomePermanent
	default:
		return OutcomeRetry
	}
}

// TrackOutcome returns a context to run a chain with and a function that,
// given the chain's error, names the delivery's outcome (one of the
// Outcome constants) as Logging and Metrics see it. A transport calls it
// to count outcomes (the consumer's Stats do); the chain must be run with
// the returned context.
func TrackOutcome(ctx context.Context) (context.Context, func(err error) string) {
	ctx, d := ensureDelivery(ctx)
	return ctx, func(err error) string { return outcome(d, err) }
}
