package main

import (
	"bufio"
	"container/heap"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"
)

// The simulated broker delivers at least once, as RocketMQ does: every copy
// of a message is delivered until it is acknowledged; a negative
// acknowledgement redelivers it after the delay the consumer asked for (one
// attempt more); a delivery not acknowledged within the in-flight timeout
// (its consumer paused or stuck) and the deliveries of a consumer that died
// are redelivered to other consumers at the same attempt, as a rebalance
// does. Copies of one
// message marked Together are handed out at the same instant to different
// consumers.
//
// Workers talk to it over loopback TCP with gob (which keeps strings byte
// for byte, invalid UTF-8 included): one connection per consumer
// goroutine, one request and one response at a time.

// wireReq is a worker's request.
type wireReq struct {
	Op      string // "next", "ack", "nack", "fail", "begin", "effect"
	Worker  int
	Fails   int
	Copy    int
	Seq     int
	DelayNS int64
	Err     string
	// External API calls (lease modes).
	N       int
	Run     string
	IdemKey string
	Account int
	Amount  int64
	// Token is the lease's fencing token (dedup.Fence), if HasToken.
	Token    uint64
	HasToken bool
}

// wireResp is the broker's answer.
type wireResp struct {
	Stop   bool
	D      *Delivery
	Replay bool
	Stale  bool
	Fail   bool
	Fenced bool
}

// Delivery is one delivery of one copy of a message.
type Delivery struct {
	Copy, Seq int
	N         int
	Class     string
	Fails     int
	ID, Key   string
	Group     string
	Body      []byte
	Attempt   int   // 1-based
	StartAt   int64 // unix nanoseconds: start the handler no earlier
	Crash     string
}

// Crash points a delivery may carry.
const (
	CrashBeforeAck = "before-ack" // exit after the chain returned nil, before the ack
	CrashInHandler = "in-handler" // exit inside the handler after its effect (before commit / before DONE)
)

type copyState struct {
	id        int
	msg       *PlannedMessage
	attempt   int // failed or timed-out deliveries so far
	acked     bool
	inflight  bool
	seq       int
	deadline  time.Time // in-flight timeout
	visibleAt time.Time
	conn      *brokerConn
	siblings  []*copyState // Together copies handed out with this one
	bundle    *bundle      // for a sibling waiting in urgent: who got its twins
	index     int          // in the delayed heap, -1 if not there
}

// bundle tracks the workers that got copies of one Together message, so
// that its siblings go to other worker processes while some are waiting.
type bundle struct {
	workers map[int]bool
	until   time.Time // after this, any worker may take a sibling
}

// delayed is a min-heap of copies by visibleAt.
type delayed []*copyState

func (h delayed) Len() int           { return len(h) }
func (h delayed) Less(i, j int) bool { return h[i].visibleAt.Before(h[j].visibleAt) }
func (h delayed) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *delayed) Push(x any)        { c := x.(*copyState); c.index = len(*h); *h = append(*h, c) }
func (h *delayed) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	c.index = -1
	return c
}

// BrokerConfig configures a Broker.
type BrokerConfig struct {
	InflightTimeout time.Duration // redeliver an unacknowledged delivery after this
	RedeliverDelay  time.Duration // after a consumer's connection is lost
	CrashRate       float64       // share of deliveries that carry a crash point
	Crashes         int           // at most this many crash points
	CrashPoints     []string      // the crash points to draw from
	Journal         string        // file path of the delivery journal; "" for none
}

// Broker is the simulated at-least-once broker and the external API of the
// lease modes.
type Broker struct {
	cfg BrokerConfig
	ln  net.Listener
	API *ExternalAPI

	mu          sync.Mutex
	rng         *rand.Rand
	copies      []*copyState
	ready       []*copyState // visible now, FIFO
	urgent      []*copyState // Together siblings, handed out first
	later       delayed
	inflight    map[int]*copyState
	acked       int
	deliveries  int
	crashesLeft int
	crashes     int
	stopping    bool
	faulting    bool // crash points are drawn only while faults are on
	journal     *bufio.Writer
	journalF    *os.File

	wg    sync.WaitGroup
	conns map[*brokerConn]struct{}
}

type brokerConn struct {
	c net.Conn
}

// NewBroker starts a broker on a loopback port with the given messages,
// whose copies become visible at the times visibleAt returns.
func NewBroker(cfg BrokerConfig, msgs []PlannedMessage, rng *rand.Rand, visibleAt func(*PlannedMessage) time.Time) (*Broker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg: cfg, ln: ln, API: newExternalAPI(), rng: rng,
		inflight: map[int]*copyState{}, crashesLeft: cfg.Crashes,
		conns: map[*brokerConn]struct{}{},
	}
	if cfg.Journal != "" {
		f, err := os.Create(cfg.Journal)
		if err != nil {
			ln.Close()
			return nil, err
		}
		b.journalF, b.journal = f, bufio.NewWriterSize(f, 1<<16)
	}
	for i := range msgs {
		m := &msgs[i]
		at := visibleAt(m)
		var group []*copyState
		for k := 0; k < m.Copies; k++ {
			c := &copyState{id: len(b.copies), msg: m, index: -1, visibleAt: at}
			if !m.Together {
				// A separate re-send: a little later, in no particular order.
				c.visibleAt = at.Add(time.Duration(k) * time.Duration(rng.IntN(200)) * time.Millisecond)
			}
			b.copies = append(b.copies, c)
			group = append(group, c)
			heap.Push(&b.later, c)
			b.logf("P %d %d %d\n", c.id, m.N, m.Copies)
		}
		if m.Together {
			for _, c := range group {
				c.siblings = group
			}
		}
	}
	b.wg.Add(1)
	go b.accept()
	return b, nil
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return b.ln.Addr().String() }

func (b *Broker) logf(format string, args ...any) {
	if b.journal != nil {
		fmt.Fprintf(b.journal, format, args...)
	}
}

// SetFaulting switches crash points on or off.
func (b *Broker) SetFaulting(on bool) {
	b.mu.Lock()
	b.faulting = on
	b.mu.Unlock()
}

// Done reports whether every copy was acknowledged.
func (b *Broker) Done() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acked == len(b.copies)
}

// Progress returns acknowledged and total copies.
func (b *Broker) Progress() (acked, total int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acked, len(b.copies)
}

// Crashes returns how many crash points were handed out.
func (b *Broker) Crashes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.crashes
}

// Stop makes every waiting and future "next" answer Stop.
func (b *Broker) Stop() {
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
}

// Close stops the broker, closes every connection and flushes the journal.
func (b *Broker) Close() {
	b.Stop()
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	if b.journal != nil {
		b.journal.Flush()
		b.journalF.Close()
	}
}

// Records returns the broker's record of every message.
func (b *Broker) Records(msgs []PlannedMessage) []MessageRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	byN := map[int]*MessageRecord{}
	out := make([]MessageRecord, len(msgs))
	for i, m := range msgs {
		out[i] = MessageRecord{N: m.N, Class: m.Class, Expect: m.Expect, Account: m.Account, Amount: m.Amount}
		byN[m.N] = &out[i]
	}
	for _, c := range b.copies {
		r := byN[c.msg.N]
		r.Copies++
		r.Deliveries += c.seq
		if c.acked {
			r.Acked++
		}
	}
	return out
}

func (b *Broker) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		bc := &brokerConn{c: c}
		b.mu.Lock()
		b.conns[bc] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(bc)
	}
}

func (b *Broker) serve(bc *brokerConn) {
	defer b.wg.Done()
	defer b.lost(bc)
	dec := gob.NewDecoder(bufio.NewReader(bc.c))
	w := bufio.NewWriter(bc.c)
	enc := gob.NewEncoder(w)
	for {
		var req wireReq
		if err := dec.Decode(&req); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				_ = err // a killed worker: its connection resets
			}
			return
		}
		var resp wireResp
		switch req.Op {
		case "next":
			resp = b.next(bc, req.Worker)
		case "ack":
			b.ack(req.Copy, req.Seq)
		case "nack":
			b.nack(req.Copy, req.Seq, time.Duration(req.DelayNS), req.Err)
		case "begin":
			resp.Fenced = b.API.Begin(req.N, req.Run, req.Token, req.HasToken)
		case "fail":
			resp.Fail = b.API.ShouldFail(req.N, req.Fails)
		case "effect":
			resp.Replay, resp.Stale, resp.Fenced = b.API.Effect(req.N, req.IdemKey, req.Run, req.Token, req.HasToken, req.Account, req.Amount)
		default:
			return
		}
		if err := enc.Encode(&resp); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// next waits for a deliverable copy and hands it to bc.
func (b *Broker) next(bc *brokerConn, worker int) wireResp {
	for {
		b.mu.Lock()
		if b.stopping {
			b.mu.Unlock()
			return wireResp{Stop: true}
		}
		if c := b.pick(worker); c != nil {
			d := b.deliver(c, bc, worker)
			b.mu.Unlock()
			return wireResp{D: d}
		}
		b.mu.Unlock()
		time.Sleep(3 * time.Millisecond)
	}
}

// pick returns the next copy to deliver to worker, or nil. Called with
// b.mu held.
func (b *Broker) pick(worker int) *copyState {
	now := time.Now()
	for b.later.Len() > 0 && !b.later[0].visibleAt.After(now) {
		b.ready = append(b.ready, heap.Pop(&b.later).(*copyState))
	}
	// In-flight timeouts.
	for _, c := range b.inflight {
		if now.After(c.deadline) {
			delete(b.inflight, c.id)
			c.inflight = false
			c.conn = nil
			b.logf("T %d %d\n", c.id, c.seq)
			b.ready = append(b.ready, c)
		}
	}
	// Together siblings first, each to a worker process that has no copy
	// of its message yet (or to anyone once the start instant is near).
	for i := 0; i < len(b.urgent); i++ {
		c := b.urgent[i]
		if c.acked || c.inflight {
			b.urgent = append(b.urgent[:i], b.urgent[i+1:]...)
			i--
			continue
		}
		if c.bundle != nil && c.bundle.workers[worker] && now.Before(c.bundle.until) {
			continue
		}
		b.urgent = append(b.urgent[:i], b.urgent[i+1:]...)
		if c.bundle != nil {
			c.bundle.workers[worker] = true
			c.bundle = nil
		}
		return c
	}
	for len(b.ready) > 0 {
		c := b.ready[0]
		b.ready = b.ready[1:]
		if !c.acked && !c.inflight && c.index < 0 && c.bundle == nil {
			return c // (a sibling with a bundle is handed out from urgent)
		}
	}
	return nil
}

// deliver records the delivery of c to bc. Called with b.mu held.
func (b *Broker) deliver(c *copyState, bc *brokerConn, worker int) *Delivery {
	now := time.Now()
	c.seq++
	c.inflight = true
	c.conn = bc
	c.deadline = now.Add(b.cfg.InflightTimeout)
	b.inflight[c.id] = c
	b.deliveries++
	m := c.msg
	d := &Delivery{
		Copy: c.id, Seq: c.seq, N: m.N, Class: m.Class, Fails: m.Fails,
		ID: m.ID, Key: m.Key, Group: m.Group, Body: m.Body(),
		Attempt: c.attempt + 1, StartAt: now.UnixNano(),
	}
	if c.visibleAt.After(now) {
		d.StartAt = c.visibleAt.UnixNano() // a Together sibling
	}
	if c.siblings != nil {
		// The first delivery of Together copies: this one and its
		// siblings start at the same instant, a little ahead, so that the
		// siblings reach other consumers first.
		start := now.Add(20 * time.Millisecond).UnixNano()
		d.StartAt = start
		bd := &bundle{workers: map[int]bool{worker: true}, until: now.Add(15 * time.Millisecond)}
		for _, s := range c.siblings {
			if s != c {
				s.siblings = nil
				s.bundle = bd
				if s.index >= 0 {
					heap.Remove(&b.later, s.index)
				}
				s.visibleAt = time.Unix(0, start)
				b.urgent = append(b.urgent, s)
			}
		}
		c.siblings = nil
	}
	if b.faulting && b.crashesLeft > 0 && len(b.cfg.CrashPoints) > 0 && b.rng.Float64() < b.cfg.CrashRate {
		b.crashesLeft--
		b.crashes++
		d.Crash = b.cfg.CrashPoints[b.rng.IntN(len(b.cfg.CrashPoints))]
	}
	b.logf("D %d %d %d %d %s\n", c.id, c.seq, d.Attempt, worker, d.Crash)
	return d
}

func (b *Broker) ack(copyID, seq int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if copyID < 0 || copyID >= len(b.copies) {
		return
	}
	c := b.copies[copyID]
	b.logf("A %d %d\n", copyID, seq)
	if c.acked {
		return
	}
	c.acked = true
	b.acked++
	if c.inflight {
		c.inflight = false
		delete(b.inflight, c.id)
	}
	if c.index >= 0 {
		heap.Remove(&b.later, c.index)
	}
}

func (b *Broker) nack(copyID, seq int, delay time.Duration, cause string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if copyID < 0 || copyID >= len(b.copies) {
		return
	}
	c := b.copies[copyID]
	b.logf("N %d %d %d %q\n", copyID, seq, delay.Milliseconds(), cause)
	if c.acked || !c.inflight || c.seq != seq {
		return // a late answer to a delivery that was already redelivered
	}
	c.inflight = false
	c.conn = nil
	delete(b.inflight, c.id)
	c.attempt++
	c.visibleAt = time.Now().Add(delay)
	heap.Push(&b.later, c)
}

// lost redelivers the copies in flight on a connection that ended.
func (b *Broker) lost(bc *brokerConn) {
	bc.c.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, bc)
	for _, c := range b.inflight {
		if c.conn == bc {
			delete(b.inflight, c.id)
			c.inflight = false
			c.conn = nil
			c.visibleAt = time.Now().Add(b.cfg.RedeliverDelay)
			b.logf("L %d %d\n", c.id, c.seq)
			heap.Push(&b.later, c)
		}
	}
}

// ExternalAPI is the external service of the lease modes: it applies an
// effect once per idempotency key (the message ID) and, because every
// handler run announces itself before working, it can tell a write from a
// run that is no longer the key's latest owner: a zombie. When handlers
// pass their lease's fencing token (dedup.Fence), it remembers the highest
// token per message and refuses a call with a lower one, as a resource that
// honours fencing tokens does; a refused call is not a zombie write.
type ExternalAPI struct {
	mu       sync.Mutex
	fence    map[int]uint64 // message -> highest fencing token seen
	fenced   int            // calls refused for a stale token
	latest   map[int]string // message -> latest run that began
	keys     map[string]int // idempotency key -> message
	applied  map[int]int
	zombie   map[int]int
	balances map[int]int64
	failures map[int]int // message -> handler runs told to fail
	calls    int
	replays  int
	begins   int
}

func newExternalAPI() *ExternalAPI {
	return &ExternalAPI{
		fence: map[int]uint64{}, latest: map[int]string{}, keys: map[string]int{}, applied: map[int]int{},
		zombie: map[int]int{}, balances: map[int]int64{}, failures: map[int]int{},
	}
}

// ShouldFail tells a handler run of message n whether to fail: the first
// fails runs of the message fail, whichever copy and process they are in,
// so that a transiently failing message fails fails times in all.
func (a *ExternalAPI) ShouldFail(n, fails int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failures[n] >= fails {
		return false
	}
	a.failures[n]++
	return true
}

// refuse reports, and counts, a call whose fencing token is below the
// highest seen for n; otherwise it raises the highest. Called with a.mu
// held.
func (a *ExternalAPI) refuse(n int, token uint64, hasToken bool) bool {
	if !hasToken {
		return false
	}
	if token < a.fence[n] {
		a.fenced++
		return true
	}
	a.fence[n] = token
	return false
}

// Begin records that run started working on message n. fenced reports a
// run refused for a stale fencing token; it is not recorded.
func (a *ExternalAPI) Begin(n int, run string, token uint64, hasToken bool) (fenced bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refuse(n, token, hasToken) {
		return true
	}
	a.begins++
	a.latest[n] = run
	return false
}

// Effect applies message n's effect unless its idempotency key was seen
// (a replay) or its fencing token is stale (fenced: nothing happens).
// stale reports an accepted write from a run that is not the latest to
// have begun on n: a zombie write.
func (a *ExternalAPI) Effect(n int, idemKey, run string, token uint64, hasToken bool, account int, amount int64) (replay, stale, fenced bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.refuse(n, token, hasToken) {
		return false, false, true
	}
	if a.latest[n] != run {
		a.zombie[n]++
		stale = true
	}
	if _, seen := a.keys[idemKey]; seen {
		a.replays++
		return true, stale, false
	}
	a.keys[idemKey] = n
	a.applied[n]++
	a.balances[account] += amount
	return false, stale, false
}

// Fenced returns how many calls were refused for a stale fencing token.
func (a *ExternalAPI) Fenced() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fenced
}

// Snapshot returns copies of the API's effects, zombie writes and balances,
// and its call and replay counts.
func (a *ExternalAPI) Snapshot() (applied, zombie map[int]int, balances map[int]int64, calls, replays int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	applied, zombie, balances = map[int]int{}, map[int]int{}, map[int]int64{}
	for k, v := range a.applied {
		applied[k] = v
	}
	for k, v := range a.zombie {
		zombie[k] = v
	}
	for k, v := range a.balances {
		balances[k] = v
	}
	return applied, zombie, balances, a.calls, a.replays
}
