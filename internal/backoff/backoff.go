// Package backoff computes idemq's one exponential backoff: the delay
// after the n-th failed attempt, as a pure function of n, so that a delay
// can be computed again from an attempt count stored in a database row or
// carried by a redelivered message.
//
// The consumer's retry policy (middleware.RetryPolicy) and the outbox
// relay's (outbox.Backoff) are configuration structs that compute through
// it.
package backoff

import (
	"math"
	"time"
)

// Exponential is Initial·Multiplier^(attempt-1), capped at Max, then spread
// uniformly over ±Jitter of itself.
//
// Out-of-range fields are clamped, never reported (the configuration
// structs that use it validate): a negative Initial or Max counts as 0, a
// Multiplier below 1 (or NaN or infinite) as 1, and a Jitter above 1 as 1;
// a Jitter of 0 or less disables jitter.
type Exponential struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	Jitter     float64
	// CapJitter caps the jittered delay at Max again, so that no delay
	// exceeds Max. Without it a delay at the cap may be up to
	// (1+Jitter)·Max.
	CapJitter bool
}

// Delay returns the delay after the given failed attempt (1-based; lower
// values count as 1). rnd returns a uniform number in [0, 1); a nil rnd
// disables jitter.
func (e Exponential) Delay(attempt int, rnd func() float64) time.Duration {
	initial := float64(max(e.Initial, 0))
	ceiling := float64(max(e.Max, 0))
	mult := e.Multiplier
	if !(mult >= 1) || math.IsInf(mult, 0) { // also catches NaN
		mult = 1
	}
	attempt = max(attempt, 1)
	d := initial * math.Pow(mult, float64(attempt-1))
	if !(d <= ceiling) { // also catches NaN
		d = ceiling
	}
	if j := math.Min(e.Jitter, 1); j > 0 && rnd != nil {
		d *= 1 + j*(2*rnd()-1)
		if e.CapJitter {
			d = math.Min(d, ceiling)
		}
	}
	return time.Duration(d)
}

// Longest returns the longest delay Delay can return after attempt: the
// delay at full upward jitter.
func (e Exponential) Longest(attempt int) time.Duration {
	return e.Delay(attempt, func() float64 { return 1 })
}
