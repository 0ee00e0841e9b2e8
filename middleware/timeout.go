package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/idemq/idemq"
)

// DefaultTimeout is the handler timeout of Standard (and of the consumer):
// 30 seconds, well below rocketmq-client-go's consume timeout of 15
// minutes, after which the client itself sends a message still in its
// callback back to the broker.
const DefaultTimeout = 30 * time.Second

// ErrInvalidTimeout is returned by Timeout for a duration that is not
// positive.
var ErrInvalidTimeout = errors.New("middleware: timeout must be positive")

// ErrHandlerTimeout is the cause of a handler context that Timeout ended
// (context.Cause), and is wrapped by the error of a delivery that failed
// after it: "handler timed out after 30s". Such an error also matches
// context.DeadlineExceeded with errors.Is.
var ErrHandlerTimeout = errors.New("handler timed out")

// TimeoutError is returned by Timeout for a handler that failed after its
// deadline passed. It matches ErrHandlerTimeout and
// context.DeadlineExceeded with errors.Is, and unwraps to the handler's
// own error.
type TimeoutError struct {
	// After is the timeout that passed.
	After time.Duration
	// Err is the error the handler returned.
	Err error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("handler timed out after %s: %v", e.After, e.Err)
}

// Unwrap returns the handler's error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Is reports whether target is ErrHandlerTimeout or
// context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool {
	return target == ErrHandlerTimeout || target == context.DeadlineExceeded
}

// Timeout returns a middleware that gives the handlers it wraps a context
// with a deadline d from the start of the delivery, whose cause
// (context.Cause) is ErrHandlerTimeout. A handler that runs past it sees
// ctx.Done(); if it then returns an error, Timeout returns a *TimeoutError
// ("handler timed out after 30s: ...") wrapping it. A handler that ignores
// its context is not interrupted.
//
// A handler still running at half of d is reported once, at Warn level on
// logger (slog.Default() if nil), with its message ID, key and topic.
//
// Inside Dedup in transactional mode the deadline also bounds the database
// transaction. A delivery that times out is an ordinary failed attempt:
// Attempts, outside, sees its own context still alive and records it.
func Timeout(d time.Duration, logger *slog.Logger) (idemq.Middleware, error) {
	if d <= 0 {
		return nil, fmt.Errorf("%w (got %s)", ErrInvalidTimeout, d)
	}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			tctx, cancel := context.WithTimeoutCause(ctx, d, fmt.Errorf("%w after %s", ErrHandlerTimeout, d))
			defer cancel()
			begin := time.Now()
			slow := time.AfterFunc(d/2, func() {
				l := logger
				if l == nil {
					l = slog.Default()
				}
				l.WarnContext(ctx, "slow handler: still running at half its timeout",
					slog.String("message_id", msg.ID),
					slog.String("key", msg.DedupKey()),
					slog.String("topic", msg.Topic),
					slog.Duration("running", time.Since(begin).Round(time.Millisecond)),
					slog.Duration("timeout", d))
			})
			err := next.Handle(tctx, msg)
			slow.Stop()
			if err != nil && ctx.Err() == nil && errors.Is(context.Cause(tctx), ErrHandlerTimeout) {
				return &TimeoutError{After: d, Err: err}
			}
			return err
		})
	}, nil
}
