package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/idemq/idemq/internal/backoff"
)

// Backoff is the exponential backoff between failed sends of one row.
type Backoff struct {
	// Initial is the delay after the first failure. Defaults to 1 second.
	Initial time.Duration
	// Max caps the delay. Defaults to 5 minutes.
	Max time.Duration
	// Multiplier grows the delay after each failure. Defaults to 2.
	Multiplier float64
	// Jitter spreads each delay uniformly by ±Jitter of itself, so rows
	// that failed together do not retry together. 0 <= Jitter < 1.
	// Defaults to 0.2; set a negative value for none.
	Jitter float64
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial == 0 {
		b.Initial = time.Second
	}
	if b.Max == 0 {
		b.Max = 5 * time.Minute
	}
	if b.Multiplier == 0 {
		b.Multiplier = 2
	}
	if b.Jitter == 0 {
		b.Jitter = 0.2
	}
	if b.Jitter < 0 {
		b.Jitter = 0
	}
	return b
}

func (b Backoff) validate() error {
	switch {
	case b.Initial < 0 || b.Max < 0:
		return errors.New("outbox: negative backoff")
	case b.Max < b.Initial:
		return fmt.Errorf("outbox: backoff Max %s is below Initial %s", b.Max, b.Initial)
	case b.Multiplier < 1:
		return fmt.Errorf("outbox: backoff Multiplier %g is below 1", b.Multiplier)
	case b.Jitter >= 1:
		return fmt.Errorf("outbox: backoff Jitter %g is not below 1", b.Jitter)
	}
	return nil
}

// Delay returns the delay after the given number of failed attempts
// (1-based): Initial*Multiplier^(attempts-1), capped at Max, then jittered.
// r returns a uniform number in [0, 1).
func (b Backoff) Delay(attempts int, r func() float64) time.Duration {
	return backoff.Exponential{
		Initial:    b.Initial,
		Max:        b.Max,
		Multiplier: b.Multiplier,
		Jitter:     b.Jitter,
	}.Delay(attempts, r)
}
