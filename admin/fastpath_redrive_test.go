package admin_test

import (
	"context"
	"errors"
	"testing"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestRedriveThroughFastPathNeedsNoClearDead proves what the redisdedup
// package documentation says about redrive: a dead key never gets a Redis
// done marker (only a delivery the inner store reports Processed writes
// one), so a redrive through admin, which clears the dead mark in the
// database, delivers the redriven message to the handler through the fast
// path without FastPath.ClearDead or Forget. It runs with the marker written
// inline and with background marker writes.
func TestRedriveThroughFastPathNeedsNoClearDead(t *testing.T) {
	for _, d := range testenv.Databases() {
		for _, queue := range []int{0, 64} {
			name := d.Name + "/inline-marker"
			if queue > 0 {
				name = d.Name + "/marker-queue"
			}
			t.Run(name, func(t *testing.T) {
				b := setup(t, d)
				fast, err := redisdedup.NewFastPath(b.store, testenv.NewRedis(t), redisdedup.FastPathConfig{
					KeyPrefix: testenv.KeyPrefix(t), MarkerQueue: queue, RetryInterval: -1,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = fast.Close(context.Background()) })
				ctx := admin.WithActor(b.ctx, "alice")
				const group, key = "g", "order:7"
				req := dedup.Request{Group: group, Key: key, MessageID: "m-" + key}
				runs := 0
				handler := func(fail bool) dedup.Func {
					return func(context.Context) error {
						runs++
						if fail {
							return idemq.Permanent(errors.New("boom"))
						}
						return nil
					}
				}

				// A key processed through the fast path gets its marker,
				// so its duplicates are answered from Redis: the marker
				// is live in this setup.
				other := dedup.Request{Group: group, Key: "order:8"}
				if _, err := fast.Process(b.ctx, other, handler(false)); err != nil {
					t.Fatal(err)
				}
				if err := fast.Flush(b.ctx); err != nil {
					t.Fatal(err)
				}
				if r, err := fast.Process(b.ctx, other, handler(false)); err != nil || r.Outcome != dedup.Duplicate || !r.FastPath {
					t.Fatalf("duplicate of a processed key = %+v, %v; want a fast-path duplicate", r, err)
				}

				// The delivery fails for good and is buried, as the
				// DeadLetter middleware does.
				if _, err := fast.Process(b.ctx, req, handler(true)); !idemq.IsPermanent(err) {
					t.Fatalf("failing delivery: %v", err)
				}
				b.bury(t, group, "orders", key, "boom")
				if err := fast.Flush(b.ctx); err != nil {
					t.Fatal(err)
				}
				// A redelivery of the dead key is a duplicate answered by
				// the database, never cached in Redis.
				for range 2 {
					r, err := fast.Process(b.ctx, req, handler(false))
					if err != nil || r.Outcome != dedup.Duplicate || !r.Dead || r.FastPath {
						t.Fatalf("redelivery of the dead key = %+v, %v; want a dead duplicate from the database", r, err)
					}
				}
				if runs != 2 {
					t.Fatalf("handler ran %d times before the redrive, want 2", runs)
				}

				// Redrive through admin; no ClearDead, no Forget.
				res, err := b.admin.RedriveDead(ctx, admin.DeadFilter{Group: group, Key: key}, admin.ActionConfig{})
				if err != nil || res.Done != 1 {
					t.Fatalf("redrive = %+v, %v", res, err)
				}
				sent := b.sent.all()
				if len(sent) != 1 || sent[0].ID != "m-"+key {
					t.Fatalf("sent = %+v", sent)
				}
				// The redriven message arrives with the same message ID,
				// and so under the same dedup key.
				r, err := fast.Process(b.ctx, req, handler(false))
				if err != nil || r.Outcome != dedup.Processed || r.FastPath {
					t.Fatalf("redriven delivery = %+v, %v; want processed by the handler", r, err)
				}
				if runs != 3 {
					t.Fatalf("handler ran %d times, want 3 (the redriven message reached it)", runs)
				}
				// And it is now done: its own duplicate comes from Redis.
				if err := fast.Flush(b.ctx); err != nil {
					t.Fatal(err)
				}
				if r, err := fast.Process(b.ctx, req, handler(false)); err != nil || r.Outcome != dedup.Duplicate || !r.FastPath || runs != 3 {
					t.Fatalf("duplicate of the redriven message = %+v, %v (runs %d)", r, err, runs)
				}
			})
		}
	}
}
