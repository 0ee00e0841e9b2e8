package middleware

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func TestRetryPolicyNextWithoutJitter(t *testing.T) {
	p := RetryPolicy{Jitter: -1} // defaults otherwise: 1s, 2h, x2
	tests := []struct {
		attempt int
		err     error
		want    time.Duration
	}{
		{attempt: 0, want: time.Second},
		{attempt: 1, want: time.Second},
		{attempt: 2, want: 2 * time.Second},
		{attempt: 5, want: 16 * time.Second},
		{attempt: 13, want: 4096 * time.Second},
		{attempt: 14, want: 2 * time.Hour},   // 8192s capped
		{attempt: 5000, want: 2 * time.Hour}, // no overflow
		{attempt: 1, err: idemq.RetryAfter(time.Minute, errBoom), want: time.Minute},
		{attempt: 13, err: idemq.RetryAfter(time.Minute, errBoom), want: 4096 * time.Second},
		{attempt: 14, err: fmt.Errorf("wrapped: %w", idemq.RetryAfter(3*time.Hour, nil)), want: 3 * time.Hour},
		{attempt: 3, err: errBoom, want: 4 * time.Second},
	}
	for _, tc := range tests {
		if got := p.Next(tc.attempt, tc.err); got != tc.want {
			t.Errorf("Next(%d, %v) = %s, want %s", tc.attempt, tc.err, got, tc.want)
		}
	}
}

func TestRetryPolicyCustom(t *testing.T) {
	p := RetryPolicy{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 3, Jitter: -1}
	want := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, time.Second}
	for i, w := range want {
		if got := p.Next(i+1, nil); got != w {
			t.Errorf("Next(%d) = %s, want %s", i+1, got, w)
		}
	}
}

func TestRetryPolicyJitterStaysInBounds(t *testing.T) {
	p := RetryPolicy{} // default jitter 0.2
	base := 8 * time.Second
	lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
	seen := map[time.Duration]bool{}
	for range 500 {
		d := p.Next(4, nil)
		if d < lo || d > hi {
			t.Fatalf("Next(4) = %s, outside [%s, %s]", d, lo, hi)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct delays in 500 draws: jitter is not applied", len(seen))
	}
	for range 200 {
		if d := p.Next(30, nil); d > 2*time.Hour {
			t.Fatalf("jittered delay %s above Max", d)
		}
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	tests := []struct {
		name string
		p    RetryPolicy
		ok   bool
	}{
		{"zero value", RetryPolicy{}, true},
		{"no jitter", RetryPolicy{Jitter: -1}, true},
		{"full", RetryPolicy{Initial: time.Second, Max: time.Minute, Multiplier: 1.5, Jitter: 1}, true},
		{"negative initial", RetryPolicy{Initial: -time.Second}, false},
		{"negative max", RetryPolicy{Max: -time.Second}, false},
		{"max below initial", RetryPolicy{Initial: time.Minute, Max: time.Second}, false},
		{"multiplier below 1", RetryPolicy{Multiplier: 0.5}, false},
		{"jitter above 1", RetryPolicy{Jitter: 1.5}, false},
	}
	for _, tc := range tests {
		err := tc.p.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: error %v does not wrap ErrInvalidOption", tc.name, err)
		}
	}
}

func TestRocketMQDelayLevel(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 1},
		{0, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{5 * time.Second, 2},
		{6 * time.Second, 3},
		{30 * time.Second, 4},
		{45 * time.Second, 5},
		{time.Minute, 5},
		{10 * time.Minute, 14},
		{11 * time.Minute, 15},
		{30 * time.Minute, 16},
		{31 * time.Minute, 17},
		{time.Hour, 17},
		{2 * time.Hour, 18},
		{3 * time.Hour, 18},
	}
	for _, tc := range tests {
		if got := RocketMQDelayLevel(tc.d); got != tc.want {
			t.Errorf("RocketMQDelayLevel(%s) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// Horizon adds up the delay levels the consumer sends for each retry, at
// full jitter: with the default policy over 16 attempts, 5s 5s 5s 10s 30s
// 1m 2m 3m 6m 20m 30m 1h 2h 2h 2h, longer than the broker's own ladder.
func TestRetryPolicyHorizon(t *testing.T) {
	want := 8*time.Hour + 2*time.Minute + 55*time.Second
	if got := (RetryPolicy{}).Horizon(16); got != want {
		t.Errorf("default policy over 16 attempts: %s, want %s", got, want)
	}
	if got := (RetryPolicy{}).Horizon(0); got != want {
		t.Errorf("maxAttempts 0 (the default 16): %s, want %s", got, want)
	}
	if got := (RetryPolicy{}).Horizon(16); got <= dedup.RocketMQRetryHorizon {
		t.Errorf("horizon %s not above the broker's ladder %s", got, dedup.RocketMQRetryHorizon)
	}
	// No jitter, 1m fixed: each retry waits exactly the 1m level.
	if got := (RetryPolicy{Initial: time.Minute, Multiplier: 1, Jitter: -1}).Horizon(4); got != 3*time.Minute {
		t.Errorf("1m fixed over 4 attempts: %s, want 3m", got)
	}
	if got := (RetryPolicy{}).Horizon(1); got != 0 {
		t.Errorf("one attempt: %s, want 0", got)
	}
}
