package backoff

import (
	"math"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	e := Exponential{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2}
	for attempt, want := range map[int]time.Duration{
		-1: time.Second, 0: time.Second, 1: time.Second, 2: 2 * time.Second,
		3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 5000: 10 * time.Second,
	} {
		if got := e.Delay(attempt, nil); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempt, got, want)
		}
	}
}

func TestJitter(t *testing.T) {
	e := Exponential{Initial: time.Second, Max: 4 * time.Second, Multiplier: 2, Jitter: 0.5}
	low := func() float64 { return 0 }
	if got := e.Delay(1, low); got != 500*time.Millisecond {
		t.Errorf("lowest jitter: %s, want 500ms", got)
	}
	if got := e.Longest(1); got != 1500*time.Millisecond {
		t.Errorf("Longest(1) = %s, want 1.5s", got)
	}
	// At the cap, jitter may go above Max unless CapJitter is set.
	if got := e.Longest(10); got != 6*time.Second {
		t.Errorf("uncapped Longest(10) = %s, want 6s", got)
	}
	e.CapJitter = true
	if got := e.Longest(10); got != 4*time.Second {
		t.Errorf("capped Longest(10) = %s, want 4s", got)
	}
	if got := e.Delay(10, nil); got != 4*time.Second {
		t.Errorf("nil rnd: %s, want 4s (no jitter)", got)
	}
}

func TestClamps(t *testing.T) {
	for _, e := range []Exponential{
		{Initial: time.Second, Max: time.Second, Multiplier: math.NaN()},
		{Initial: time.Second, Max: time.Second, Multiplier: math.Inf(1)},
		{Initial: time.Second, Max: time.Second, Multiplier: 0.5},
		{Initial: time.Second, Max: time.Second, Multiplier: 2, Jitter: 5, CapJitter: true},
	} {
		if got := e.Delay(50, func() float64 { return 0.999 }); got < 0 || got > time.Second {
			t.Errorf("%+v: Delay(50) = %s, want within [0, 1s]", e, got)
		}
	}
	if got := (Exponential{Initial: -time.Second, Max: -time.Second}).Delay(3, nil); got != 0 {
		t.Errorf("negative fields: %s, want 0", got)
	}
}
