package redisdedup

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestLeaseRedisDownIsUnavailable: a LeaseStore whose Redis is cut, hung
// or not listening fails with an error wrapping dedup.ErrUnavailable
// (dedup.IsInfrastructure), so that middleware neither counts an attempt
// nor buries the message, and the consumer pauses instead: a Redis outage
// must not burn every message's attempts into the dead letters. The
// handler does not run. The same holds for the done mark after a handler
// that succeeded, and for dead marks.
func TestLeaseRedisDownIsUnavailable(t *testing.T) {
	ctx := context.Background()
	p := newProxy(t, redisAddr(t))
	b := setupLease(t, newClient(t, p.Addr()), LeaseConfig{Lease: 600 * time.Millisecond})
	want := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s with Redis down succeeded: the case proves nothing", what)
		}
		if !errors.Is(err, dedup.ErrUnavailable) {
			t.Fatalf("%s with Redis down: %v; want an error wrapping dedup.ErrUnavailable", what, err)
		}
	}
	var runs atomic.Int64

	t.Run("Cut", func(t *testing.T) {
		p.Cut()
		defer p.Restore()
		_, err := b.store.Process(ctx, dedup.Request{Group: "g", Key: "cut"}, counter(&runs))
		want(t, "Process", err)
		want(t, "MarkDead", b.store.MarkDead(ctx, "g", "cut"))
		want(t, "ClearDead", b.store.ClearDead(ctx, "g", "cut"))
	})
	t.Run("Hung", func(t *testing.T) {
		p.Stall()
		defer p.Resume()
		_, err := b.store.Process(ctx, dedup.Request{Group: "g", Key: "hung"}, counter(&runs))
		want(t, "Process", err)
	})
	t.Run("NotListening", func(t *testing.T) {
		dead := setupLease(t, newClient(t, testenv.DeadAddr(t)), LeaseConfig{})
		_, err := dead.store.Process(ctx, dedup.Request{Group: "g", Key: "dead"}, counter(&runs))
		want(t, "Process", err)
	})
	if n := runs.Load(); n != 0 {
		t.Fatalf("the handler ran %d times with Redis down", n)
	}
	t.Run("MarkAfterHandler", func(t *testing.T) {
		// The handler succeeds, but Redis is gone by the time its done
		// mark is sent.
		_, err := b.store.Process(ctx, dedup.Request{Group: "g", Key: "mark"}, func(context.Context) error {
			p.Cut()
			return nil
		})
		p.Restore()
		want(t, "the done mark", err)
	})
}
