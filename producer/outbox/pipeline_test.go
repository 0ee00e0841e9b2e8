package outbox

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// TestRelayLoopStartsTheNextBatchWhileOneSendIsInFlight: the relay's loop
// keeps its window of sends busy across batches. The first row's send
// hangs until the sender has seen rows of the next batches; a loop that
// waited for the whole batch before claiming the next would never send
// them, and the first send would hang until the test gives up.
func TestRelayLoopStartsTheNextBatchWhileOneSendIsInFlight(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		const batch, rows = 2, 6
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", rows)
		later := make(chan struct{})
		var once sync.Once
		s := &recSender{fail: func(msg *idemq.Message, call int) error {
			if msg.ID == ids[0] {
				select {
				case <-later:
				case <-time.After(20 * time.Second):
				}
				return nil
			}
			if call >= rows {
				once.Do(func() { close(later) })
			}
			return nil
		}}
		r := newRelay(t, b.ob, s, RelayConfig{BatchSize: batch, SendWindow: 4, PollInterval: 10 * time.Millisecond})
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer r.Shutdown(context.Background())
		select {
		case <-later:
		case <-time.After(10 * time.Second):
			t.Fatalf("the other %d rows were not all sent while the first row's send was in flight (%d sends started)", rows-1, s.n.Load())
		}
		waitFor(t, "every row marked sent", func() bool { return b.stats(t).Sent == rows })
		for id, n := range s.delivered() {
			if n != 1 {
				t.Fatalf("%s delivered %d times", id, n)
			}
		}
	})
}

// TestRelayLoopWindowSpansBatches: a started relay keeps SendWindow sends
// in flight, never more, even when a batch is smaller than the window, so
// the window is filled from the following batches.
func TestRelayLoopWindowSpansBatches(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		const rows, batch, window = 24, 3, 4
		b := setup(t, d, Config{})
		b.enqueueN(t, "orders", rows)
		var inFlight, most atomic.Int64
		s := SenderFunc(func(ctx context.Context, msg *idemq.Message) (string, error) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			return "ok", nil
		})
		r := newRelay(t, b.ob, s, RelayConfig{BatchSize: batch, SendWindow: window, PollInterval: 10 * time.Millisecond})
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer r.Shutdown(context.Background())
		waitFor(t, "every row marked sent", func() bool { return b.stats(t).Sent == rows })
		if got := most.Load(); got != window {
			t.Errorf("at most %d sends in flight with batches of %d, want SendWindow = %d", got, batch, window)
		}
	})
}

// TestConfirmedRowsShareMarkStatements: rows confirmed one after another,
// slower than a mark takes, still share mark statements (they wait a few
// milliseconds for company), and every row ends marked sent.
func TestConfirmedRowsShareMarkStatements(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		const rows = 60
		b := setup(t, d, Config{})
		b.enqueueN(t, "orders", rows)
		var statements, marked atomic.Int64
		s := SenderFunc(func(ctx context.Context, msg *idemq.Message) (string, error) {
			time.Sleep(time.Millisecond)
			return "ok", nil
		})
		cfg := RelayConfig{BatchSize: rows, SendWindow: 1}
		cfg.hooks.MarkStatement = func(_ string, n int) {
			statements.Add(1)
			marked.Add(int64(n))
		}
		r := newRelay(t, b.ob, s, cfg)
		if n, err := r.RunOnce(context.Background()); err != nil || n != rows {
			t.Fatalf("RunOnce: %d, %v; want %d", n, err, rows)
		}
		if st := b.stats(t); st.Sent != rows || marked.Load() != rows {
			t.Fatalf("%d rows sent, %d given to marks; want %d", st.Sent, marked.Load(), rows)
		}
		if n := statements.Load(); n > rows/2 {
			t.Fatalf("%d mark statements for %d rows confirmed 1ms apart; want at most %d", n, rows, rows/2)
		}
		t.Logf("%d mark statements for %d rows", statements.Load(), rows)
	})
}
