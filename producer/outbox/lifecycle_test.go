package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// A relay has the lifecycle of every long-lived idemq value: Start runs
// the loop (idempotent), Shutdown stops it and releases what it holds
// (idempotent), nothing starts after Shutdown.
func TestRelayLifecycle(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		ctx := context.Background()
		b := setup(t, d, Config{})
		s := &recSender{}
		r := newRelay(t, b.ob, s, RelayConfig{PollInterval: time.Hour})
		for range 2 {
			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Notify wakes the loop long before the hour-long poll interval.
		ids := b.enqueue(t, &idemq.Message{Topic: "orders"})
		r.Notify()
		waitFor(t, "the row to be sent", func() bool { return b.get(t, ids[0]).Status == StatusSent })
		for range 2 {
			if err := r.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		}
		if err := r.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after Shutdown = %v, want ErrClosed", err)
		}
		if _, err := r.RunOnce(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("RunOnce after Shutdown = %v, want ErrClosed", err)
		}
		if _, err := r.SendNow(ctx, ids...); !errors.Is(err, ErrClosed) {
			t.Fatalf("SendNow after Shutdown = %v, want ErrClosed", err)
		}
		if n := s.callCount(); n != 1 {
			t.Fatalf("sender called %d times, want 1", n)
		}

		// Shutdown without Start is fine.
		idle := newRelay(t, b.ob, s, RelayConfig{})
		if err := idle.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown without Start: %v", err)
		}
	})
}

// Start names a missing table and how to create it, instead of logging a
// claim failure every poll.
func TestRelayStartWithoutTable(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		b.exec(t, "DROP TABLE "+b.ob.table)
		r := newRelay(t, b.ob, &recSender{}, RelayConfig{})
		err := r.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), b.ob.table) || !strings.Contains(err.Error(), "Migrate") {
			t.Fatalf("Start without the table = %v, want an error naming %s and Migrate", err, b.ob.table)
		}
	})
}
