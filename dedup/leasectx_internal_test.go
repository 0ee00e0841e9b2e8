package dedup

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestLeaseContextReadsTheMonotonicClock checks that a lease context keeps
// its deadline on the monotonic clock, before and after a renewal moves
// it: a time without a monotonic reading is compared by the wall clock,
// which a step back (NTP, a resumed VM) would turn into a handler running
// past its lease while a successor holds the key. A Time prints its
// monotonic reading as "m=±…".
func TestLeaseContextReadsTheMonotonicClock(t *testing.T) {
	c := newLeaseContext(context.Background(), 1, time.Now().Add(time.Hour), nil)
	defer c.finish()
	if s := c.until().String(); !strings.Contains(s, " m=") {
		t.Fatalf("deadline %s carries no monotonic clock reading", s)
	}
	if !c.extend(time.Now().Add(2 * time.Hour)) {
		t.Fatal("extend refused a live lease")
	}
	if s := c.until().String(); !strings.Contains(s, " m=") {
		t.Fatalf("deadline after a renewal %s carries no monotonic clock reading", s)
	}
	if d, _ := c.Deadline(); time.Until(d) < 90*time.Minute {
		t.Fatalf("Deadline %v, want about two hours away", d)
	}
	// A deadline just passed ends the context on the next Err, timer or no
	// timer.
	c2 := newLeaseContext(context.Background(), 1, time.Now().Add(20*time.Millisecond), nil)
	defer c2.finish()
	time.Sleep(30 * time.Millisecond)
	if err := c2.Err(); err != context.DeadlineExceeded {
		t.Fatalf("Err after the deadline = %v, want DeadlineExceeded", err)
	}
}
