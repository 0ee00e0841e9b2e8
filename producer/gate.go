package producer

import "sync"

// gate admits calls until it is closed, and closing waits for the calls it
// admitted: the shutdown of Producer and TransactionProducer.
type gate struct {
	mu     sync.RWMutex // guards closed against calls entering
	closed bool
	wg     sync.WaitGroup
	once   sync.Once
}

// enter admits a call, or returns ErrClosed; leave must follow an admitted
// call.
func (g *gate) enter() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return ErrClosed
	}
	g.wg.Add(1)
	return nil
}

func (g *gate) leave() { g.wg.Done() }

// close refuses further calls, waits for the admitted ones and then runs
// stop, once; later calls return nil.
func (g *gate) close(stop func() error) error {
	var err error
	g.once.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		g.wg.Wait()
		err = stop()
	})
	return err
}
