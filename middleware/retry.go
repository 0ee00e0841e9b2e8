package middleware

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/backoff"
)

// RetryPolicy computes how long a transport waits before redelivering a
// message that failed: exponential backoff, capped and jittered. Zero
// fields take their defaults, so RetryPolicy{} is the default policy.
type RetryPolicy struct {
	// Initial is the delay after the first failed attempt. Defaults to 1s.
	Initial time.Duration
	// Max caps the delay (before an idemq.RetryAfter floor). Defaults to
	// 2h, RocketMQ's longest delay level.
	Max time.Duration
	// Multiplier grows the delay after each further attempt; it must be at
	// least 1. Defaults to 2.
	Multiplier float64
	// Jitter spreads each delay uniformly over ±Jitter of itself, so that
	// messages that failed together are not redelivered together; it must
	// be at most 1. Defaults to 0.2; a negative value disables jitter.
	Jitter float64
}

// Default retry policy values.
const (
	DefaultRetryInitial    = time.Second
	DefaultRetryMax        = 2 * time.Hour
	DefaultRetryMultiplier = 2.0
	DefaultRetryJitter     = 0.2
)

// WithDefaults returns p with zero fields set to their defaults.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.Initial == 0 {
		p.Initial = DefaultRetryInitial
	}
	if p.Max == 0 {
		p.Max = DefaultRetryMax
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultRetryMultiplier
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultRetryJitter
	}
	return p
}

// Validate reports a policy whose fields are out of range (zero fields are
// fine: they take their defaults).
func (p RetryPolicy) Validate() error {
	switch q := p.WithDefaults(); {
	case q.Initial < 0:
		return fmt.Errorf("%w: negative retry Initial %s", ErrInvalidOption, p.Initial)
	case q.Max < 0:
		return fmt.Errorf("%w: negative retry Max %s", ErrInvalidOption, p.Max)
	case q.Max < q.Initial:
		return fmt.Errorf("%w: retry Max %s below Initial %s", ErrInvalidOption, q.Max, q.Initial)
	case q.Multiplier < 1 || math.IsNaN(q.Multiplier) || math.IsInf(q.Multiplier, 0):
		return fmt.Errorf("%w: retry Multiplier %v must be a finite number >= 1", ErrInvalidOption, p.Multiplier)
	case q.Jitter > 1 || math.IsNaN(q.Jitter):
		return fmt.Errorf("%w: retry Jitter %v above 1", ErrInvalidOption, p.Jitter)
	}
	return nil
}

// Next returns the delay before redelivering a message whose attempt
// (1-based) just failed with err: Initial·Multiplier^(attempt-1), capped at
// Max, spread by Jitter and capped again. If err asks for a delay with
// idemq.RetryAfter, the result is at least that delay, even above Max.
// Out-of-range fields are clamped rather than reported; use Validate to
// report them.
func (p RetryPolicy) Next(attempt int, err error) time.Duration {
	delay := p.exponential().Delay(attempt, rand.Float64)
	if floor, ok := idemq.RetryDelay(err); ok && floor > delay {
		delay = floor
	}
	return delay
}

// Horizon returns how long a message that keeps failing is redelivered
// under this policy by a RocketMQ consumer before the DeadLetter middleware
// buries it at attempt maxAttempts: the sum, over the maxAttempts-1
// retries, of the longest delay Next can return (full jitter) rounded up to
// the RocketMQ delay level the consumer sends (see RocketMQDelayLevel). With
// the default policy and 16 attempts it is 8h2m55s, longer than the
// broker's own default ladder (dedup.RocketMQRetryHorizon).
//
// Dedup rows must outlast it plus a redrive window (dedup.Retention);
// Standard checks this. Not included: idemq.RetryAfter delays above the
// policy's, Busy redeliveries, and pauses while the store is unavailable,
// which count no attempt; leave room for them in the redrive window.
// maxAttempts <= 0 means DefaultMaxAttempts.
func (p RetryPolicy) Horizon(maxAttempts int) time.Duration {
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	e := p.exponential()
	var total time.Duration
	for attempt := 1; attempt < maxAttempts; attempt++ {
		total += rocketMQDelayLevels[RocketMQDelayLevel(e.Longest(attempt))-1]
	}
	return total
}

// exponential is the policy, with defaults, as the shared backoff: jitter
// never takes a delay above Max.
func (p RetryPolicy) exponential() backoff.Exponential {
	q := p.WithDefaults()
	return backoff.Exponential{
		Initial:    q.Initial,
		Max:        q.Max,
		Multiplier: q.Multiplier,
		Jitter:     q.Jitter,
		CapJitter:  true,
	}
}

// rocketMQDelayLevels are the delays of RocketMQ's default
// messageDelayLevel ladder, levels 1 to 18.
var rocketMQDelayLevels = [...]time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute,
	5 * time.Minute, 6 * time.Minute, 7 * time.Minute, 8 * time.Minute,
	9 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour,
}

// RocketMQDelayLevel maps d to the smallest RocketMQ delay level (1 to 18,
// for 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h) whose
// delay is at least d, so a redelivery never comes sooner than asked. A
// delay above 2h maps to 18, the longest level; a delay of 1s or less maps
// to 1.
func RocketMQDelayLevel(d time.Duration) int {
	for i, level := range rocketMQDelayLevels {
		if level >= d {
			return i + 1
		}
	}
	return len(rocketMQDelayLevels)
}
