// Package gate is the lifecycle of idemq's long-lived values (producers,
// the outbox relay, node leases): Start once, admit calls while started,
// and on Shutdown refuse new calls, wait for the admitted ones, then stop,
// once.
package gate

import (
	"context"
	"sync"
)

// Gate guards the lifecycle of one value. The zero Gate is not usable: use
// New.
type Gate struct {
	closedErr, notStartedErr error

	startMu sync.Mutex // serializes Start

	mu       sync.Mutex
	started  bool
	closed   bool
	inFlight int
	drained  chan struct{} // closed once closed and inFlight is 0
	done     chan struct{} // closed once stop returned
	stopErr  error
	once     sync.Once
}

// New returns a Gate whose Enter and Start return closed after Shutdown
// began, and whose Enter returns notStarted before Start succeeded; with a
// nil notStarted, Enter admits calls before Start too.
func New(closed, notStarted error) *Gate {
	return &Gate{
		closedErr:     closed,
		notStartedErr: notStarted,
		drained:       make(chan struct{}),
		done:          make(chan struct{}),
	}
}

// Start runs start, unless an earlier Start succeeded (then it returns
// nil) or Shutdown began (then it returns the closed error). Concurrent
// calls run one at a time; a start that failed may be tried again.
func (g *Gate) Start(ctx context.Context, start func(context.Context) error) error {
	g.startMu.Lock()
	defer g.startMu.Unlock()
	g.mu.Lock()
	started, closed := g.started, g.closed
	g.mu.Unlock()
	switch {
	case closed:
		return g.closedErr
	case started:
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := start(ctx); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		// Shutdown began while start ran. Shutdown waits for startMu
		// before it stops anything, so it sees started and stops it.
		g.started = true
		return g.closedErr
	}
	g.started = true
	return nil
}

// Started reports whether Start succeeded.
func (g *Gate) Started() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started
}

// Enter admits a call while the gate is started (or New was given no
// notStarted error) and not closed; Leave must follow an admitted call.
func (g *Gate) Enter() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return g.closedErr
	case !g.started && g.notStartedErr != nil:
		return g.notStartedErr
	}
	g.inFlight++
	return nil
}

// Leave ends a call that Enter admitted.
func (g *Gate) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	if g.closed && g.inFlight == 0 {
		close(g.drained)
	}
}

// Closed returns a channel that is closed once stop has returned.
func (g *Gate) Closed() <-chan struct{} { return g.done }

// Shutdown refuses further calls, waits for the admitted ones and then
// runs stop (only if Start succeeded), once, without a deadline of its
// own. Every call returns stop's result once it is done, or its own ctx's
// error if that comes first; stop then goes on in the background, and a
// later call waits for it again.
func (g *Gate) Shutdown(ctx context.Context, stop func() error) error {
	g.once.Do(func() {
		g.mu.Lock()
		g.closed = true
		if g.inFlight == 0 {
			close(g.drained)
		}
		g.mu.Unlock()
		go func() {
			<-g.drained
			g.startMu.Lock() // a Start in progress finishes first
			started := g.started
			g.startMu.Unlock()
			if started && stop != nil {
				g.stopErr = stop()
			}
			close(g.done)
		}()
	})
	select {
	case <-g.done:
		return g.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}
