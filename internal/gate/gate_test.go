package gate

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

var (
	errClosed     = errors.New("closed")
	errNotStarted = errors.New("not started")
)

func TestLifecycle(t *testing.T) {
	g := New(errClosed, errNotStarted)
	ctx := context.Background()
	if err := g.Enter(); !errors.Is(err, errNotStarted) {
		t.Fatalf("Enter before Start: %v, want errNotStarted", err)
	}
	var starts atomic.Int32
	start := func(context.Context) error { starts.Add(1); return nil }
	for range 2 {
		if err := g.Start(ctx, start); err != nil {
			t.Fatal(err)
		}
	}
	if n := starts.Load(); n != 1 {
		t.Fatalf("start ran %d times, want 1 (Start is idempotent)", n)
	}
	if err := g.Enter(); err != nil {
		t.Fatal(err)
	}

	var stops atomic.Int32
	stop := func() error { stops.Add(1); return errors.New("stopped") }
	// A call is in flight: Shutdown waits for it, up to its ctx.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := g.Shutdown(short, stop); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a call in flight: %v, want DeadlineExceeded", err)
	}
	if stops.Load() != 0 {
		t.Fatal("stop ran before the call in flight left")
	}
	if err := g.Enter(); !errors.Is(err, errClosed) {
		t.Fatalf("Enter after Shutdown: %v, want errClosed", err)
	}
	if err := g.Start(ctx, start); !errors.Is(err, errClosed) {
		t.Fatalf("Start after Shutdown: %v, want errClosed", err)
	}
	g.Leave()
	for range 2 {
		if err := g.Shutdown(ctx, stop); err == nil || err.Error() != "stopped" {
			t.Fatalf("Shutdown: %v, want stop's error", err)
		}
	}
	if n := stops.Load(); n != 1 {
		t.Fatalf("stop ran %d times, want 1", n)
	}
	select {
	case <-g.Closed():
	default:
		t.Fatal("Closed not closed after Shutdown returned")
	}
}

func TestShutdownWithoutStart(t *testing.T) {
	g := New(errClosed, errNotStarted)
	stopped := false
	if err := g.Shutdown(context.Background(), func() error { stopped = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if stopped {
		t.Fatal("stop ran without Start")
	}
}

func TestFailedStartCanBeRetried(t *testing.T) {
	g := New(errClosed, errNotStarted)
	boom := errors.New("boom")
	if err := g.Start(context.Background(), func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Start: %v, want boom", err)
	}
	if g.Started() {
		t.Fatal("Started after a failed start")
	}
	if err := g.Start(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !g.Started() {
		t.Fatal("not Started after a successful start")
	}
}

// Without a notStarted error, calls are admitted before Start, and
// Shutdown waits for them too.
func TestAdmitBeforeStart(t *testing.T) {
	g := New(errClosed, nil)
	if err := g.Enter(); err != nil {
		t.Fatalf("Enter before Start: %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Shutdown(short, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a call in flight: %v, want DeadlineExceeded", err)
	}
	g.Leave()
	if err := g.Shutdown(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Enter(); !errors.Is(err, errClosed) {
		t.Fatalf("Enter after Shutdown: %v, want errClosed", err)
	}
}
