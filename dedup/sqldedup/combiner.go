package sqldedup

import "sync"

// maxBatch is the most lease-mode claims or marks one statement carries.
const maxBatch = 64

// combiner lets concurrent calls share one statement. There is no
// goroutine of its own: the first caller that finds no batch running
// becomes the leader and runs the calls queued so far, its own among them;
// calls that arrive meanwhile queue, and when the leader's batch ends it
// hands the lead to the first of them. A lone call therefore runs at once,
// alone, and under load each statement carries the calls that queued
// during the previous one. A batch holds at most one call per key (a
// zombie owner's mark and its successor's, or two copies of one delivery,
// may queue together: the rows a statement changed are told apart by
// key) and at most maxBatch calls, in queue order.
type combiner[Q, A any] struct {
	mu      sync.Mutex
	running bool
	queue   []*call[Q, A]
}

// call is one queued call: its question, its key, and where its answer
// (or the lead) is sent. run sends every call of its batch exactly one
// answer.
type call[Q, A any] struct {
	q     Q
	key   [2]string
	reply chan answer[A]
}

type answer[A any] struct {
	a    A
	lead bool
}

// do queues q under key and returns its answer, running batches (with
// run) while it leads.
func (c *combiner[Q, A]) do(key [2]string, q Q, run func(batch []*call[Q, A])) A {
	m := &call[Q, A]{q: q, key: key, reply: make(chan answer[A], 1)}
	c.mu.Lock()
	c.queue = append(c.queue, m)
	for {
		if c.running {
			c.mu.Unlock()
			r := <-m.reply
			if !r.lead {
				return r.a
			}
			c.mu.Lock() // the lead: the queue holds m
		}
		c.running = true
		batch := c.take()
		c.mu.Unlock()

		run(batch)

		c.mu.Lock()
		c.running = false
		if c.queued(m) {
			continue // m's key was taken by an earlier call: lead on
		}
		if len(c.queue) > 0 {
			c.running = true
			c.queue[0].reply <- answer[A]{lead: true}
		}
		c.mu.Unlock()
		return (<-m.reply).a
	}
}

// queued reports whether m is still in the queue. c.mu is held.
func (c *combiner[Q, A]) queued(m *call[Q, A]) bool {
	for _, x := range c.queue {
		if x == m {
			return true
		}
	}
	return false
}

// take removes the next batch from the queue. c.mu is held.
func (c *combiner[Q, A]) take() []*call[Q, A] {
	batch := make([]*call[Q, A], 0, min(len(c.queue), maxBatch))
	seen := make(map[[2]string]bool, cap(batch))
	rest := c.queue[:0]
	for _, m := range c.queue {
		if len(batch) == maxBatch || seen[m.key] {
			rest = append(rest, m)
			continue
		}
		seen[m.key] = true
		batch = append(batch, m)
	}
	clear(c.queue[len(rest):])
	c.queue = rest
	return batch
}
