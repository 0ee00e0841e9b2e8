//go:build unix

package redisdedup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
)

// pausedLease is the lease of TestLeasePausedProcess.
const pausedLease = time.Second

// TestLeasePausedProcess pauses a real process past its lease: a child
// process claims a key and, in its handler, is stopped (SIGSTOP) before
// its effect; a successor takes the key over and performs its effect; the
// child is continued (SIGCONT). The resumed child must find its context
// ended and not perform its effect after its successor's. Effects are
// recorded, with their owner's fencing token, in a Redis list.
func TestLeasePausedProcess(t *testing.T) {
	if testenv.IsChild(t.Name()) {
		pausedChild(t)
		return
	}
	client := newRedis(t)
	prefix := keyPrefix(t)
	s, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: prefix, Lease: pausedLease, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	effects := prefix + "effects"
	req := dedup.Request{Group: "g", Key: "paused"}

	child := testenv.StartChild(t, "TestLeasePausedProcess", "IDEMQ_PAUSED_PREFIX="+prefix)
	zfence, err := strconv.ParseUint(child.Expect(t, "claimed", 60*time.Second), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	child.Signal(t, syscall.SIGSTOP)

	var sfence uint64
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := s.Process(context.Background(), req, func(ctx context.Context) error {
			sfence, _ = dedup.Fence(ctx)
			return client.RPush(context.Background(), effects, fmt.Sprintf("successor:%d", sfence)).Err()
		})
		if err != nil {
			t.Fatalf("successor: %v", err)
		}
		if res.Outcome == dedup.Processed {
			break
		}
		if res.Outcome != dedup.Busy || time.Now().After(deadline) {
			t.Fatalf("successor: %+v", res)
		}
		time.Sleep(min(max(res.RetryAfter, 10*time.Millisecond), 200*time.Millisecond))
	}
	child.Send(t, "go")
	child.Signal(t, syscall.SIGCONT)
	said := child.Expect(t, "", 60*time.Second)
	if err := child.Wait(t, 60*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}

	rows, err := client.LRange(context.Background(), effects, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("paused owner's token %d, successor's %d; child: %s; effects %v", zfence, sfence, said, rows)
	if sfence <= zfence {
		t.Errorf("successor's token %d is not above the paused owner's %d", sfence, zfence)
	}
	var last uint64
	for _, r := range rows {
		actor, tok, _ := strings.Cut(r, ":")
		f, _ := strconv.ParseUint(tok, 10, 64)
		if actor == "zombie" {
			t.Errorf("the resumed owner performed its effect (token %d) after its successor's", f)
		}
		if f < last {
			t.Errorf("effect with token %d after one with token %d", f, last)
		}
		last = f
	}
}

// pausedChild is the child of TestLeasePausedProcess: it claims the key,
// says so, waits for the parent's word (it is stopped meanwhile), and
// performs its effect only if its context is still live.
func pausedChild(t *testing.T) {
	client := newRedis(t)
	prefix := os.Getenv("IDEMQ_PAUSED_PREFIX")
	s, err := NewLeaseStore(client, LeaseConfig{KeyPrefix: prefix, Lease: pausedLease, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Process(context.Background(), dedup.Request{Group: "g", Key: "paused"}, func(ctx context.Context) error {
		fence, _ := dedup.Fence(ctx)
		testenv.ChildSay("claimed %d", fence)
		if _, err := testenv.ChildRead(); err != nil {
			return err
		}
		// Resumed: act only under a live lease.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped: %w", context.Cause(ctx))
		}
		return client.RPush(context.Background(), prefix+"effects", fmt.Sprintf("zombie:%d", fence)).Err()
	})
	switch {
	case err == nil:
		testenv.ChildSay("acted and marked the key done")
	case errors.Is(err, dedup.ErrLeaseLost):
		testenv.ChildSay("ended without acting or marking: %v", err)
	default:
		t.Fatalf("child: %v", err)
	}
}
