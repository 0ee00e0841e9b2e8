package producer

import (
	"errors"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	var g gate
	if err := g.enter(); err != nil {
		t.Fatalf("enter on an open gate: %v", err)
	}
	stopped := make(chan struct{})
	closed := make(chan error, 1)
	go func() {
		closed <- g.close(func() error { close(stopped); return errors.New("stop failed") })
	}()
	// close waits for the admitted call before stopping.
	select {
	case <-stopped:
		t.Fatal("stop ran while a call was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	// Once closing has begun, new calls are refused.
	deadline := time.Now().Add(5 * time.Second)
	for g.enter() == nil {
		g.leave()
		if time.Now().After(deadline) {
			t.Fatal("calls still admitted while closing")
		}
		time.Sleep(time.Millisecond)
	}
	g.leave() // the call admitted first ends
	if err := <-closed; err == nil || err.Error() != "stop failed" {
		t.Fatalf("close = %v, want stop's error", err)
	}
	if err := g.enter(); !errors.Is(err, ErrClosed) {
		t.Fatalf("enter after close = %v, want ErrClosed", err)
	}
	ran := false
	if err := g.close(func() error { ran = true; return nil }); err != nil || ran {
		t.Fatalf("second close: err %v, stop ran %v; want nil and not run", err, ran)
	}
}
