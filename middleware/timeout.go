package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idemq/idemq"
)

// ErrInvalidTimeout is returned by Timeout for a duration that is not
// positive.
var ErrInvalidTimeout = errors.New("middleware: timeout must be positive")

// Timeout returns a middleware that gives the handlers it wraps a context
// with a deadline d from the start of the delivery. A handler that runs past
// it sees ctx.Done(); what it returns is passed on unchanged, so a handler
// that ignores its context is not interrupted.
//
// Inside Dedup in transactional mode the deadline also bounds the database
// transaction. A delivery that times out is an ordinary failed attempt:
// Attempts, outside, sees its own context still alive and records it.
func Timeout(d time.Duration) (idemq.Middleware, error) {
	if d <= 0 {
		return nil, fmt.Errorf("%w (got %s)", ErrInvalidTimeout, d)
	}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next.Handle(ctx, msg)
		})
	}, nil
}
