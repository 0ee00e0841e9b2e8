package rmqtest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"
)

// This file holds the server loop: accepting connections, reading frames,
// dispatching requests in order, writing replies, and the broker-initiated
// requests (NOTIFY_CONSUMER_IDS_CHANGED, CHECK_TRANSACTION_STATE).

const (
	// writeTimeout bounds one frame write to a client.
	writeTimeout = 5 * time.Second
	// workQueueLen bounds the requests read from one connection but not yet
	// processed; the reader blocks beyond it.
	workQueueLen = 256
	// maxInflightPulls bounds concurrent held pulls per connection.
	maxInflightPulls = 1024
	// frameHeadroom is added to MaxMessageSize for the frame limit: a
	// frame whose body is a little over the message limit is still read,
	// so the producer gets code 13 rather than a dropped connection.
	frameHeadroom = 1 << 20
	// dropGrace is how long DropConnections keeps answering requests on a
	// connection with an error before shutting it.
	dropGrace = 50 * time.Millisecond
	// dropRemark is the remark of replies refused by DropConnections.
	dropRemark = "connection dropped (rmqtest DropConnections)"
)

// conn is one client connection.
type conn struct {
	b     *Broker
	nc    net.Conn
	wmu   sync.Mutex
	work  chan *command
	pulls chan struct{}
	done  chan struct{}
	once  sync.Once
	// drain is closed by DropConnections: held pulls answer "no new
	// message" at once, before the connection closes.
	drain     chan struct{}
	drainOnce sync.Once
	// writeClosed is set (under wmu) once the write side is shut.
	writeClosed bool
	remote      *net.TCPAddr

	// mu guards clientID.
	mu       sync.Mutex
	clientID string
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.nc.Close()
	})
}

// dropGracefully answers held pulls, then closes the connection the
// polite way: it half-closes its side and waits (a little) for the client
// to close, so the replies are not destroyed by a TCP reset.
func (c *conn) dropGracefully() {
	c.drainOnce.Do(func() { close(c.drain) })
	// Wait (up to a second) for held pulls to write their replies; c.pulls
	// holds one token per pull in flight.
	for deadline := time.Now().Add(time.Second); len(c.pulls) > 0 && time.Now().Before(deadline); {
		if !sleepCtx(c.done, time.Millisecond) {
			break
		}
	}
	// Requests the client wrote before it saw the replies still get an
	// error answer during a short grace period.
	sleepCtx(c.done, dropGrace)
	c.wmu.Lock()
	c.writeClosed = true
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	c.wmu.Unlock()
	sleepCtx(c.done, time.Second)
	c.close()
}

func (c *conn) draining() bool {
	select {
	case <-c.drain:
		return true
	default:
		return false
	}
}

func (c *conn) getClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

func (c *conn) setClientID(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clientID = id
}

// write sends one command now.
func (c *conn) write(cmd *command) error {
	frame, err := encodeCommand(cmd)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeClosed {
		return net.ErrClosed
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.nc.Write(frame); err != nil {
		c.close()
		return err
	}
	return nil
}

// reply answers a request, honouring Pause and DelayReplies.
func (c *conn) reply(resp *command) {
	b := c.b
	if d := time.Duration(b.replyDelay.Load()); d > 0 {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if sleepCtx(c.done, d) && b.pause.wait(c.done) {
				_ = c.write(resp)
			}
		}()
		return
	}
	if b.pause.wait(c.done) {
		_ = c.write(resp)
	}
}

func (b *Broker) acceptLoop() {
	defer b.wg.Done()
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			if b.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			b.log.Warn("rmqtest: accept", "err", err)
			if !sleepCtx(b.closed, 10*time.Millisecond) {
				return
			}
			continue
		}
		c := &conn{
			b:     b,
			nc:    nc,
			work:  make(chan *command, workQueueLen),
			pulls: make(chan struct{}, maxInflightPulls),
			done:  make(chan struct{}),
			drain: make(chan struct{}),
		}
		c.remote, _ = nc.RemoteAddr().(*net.TCPAddr)
		b.mu.Lock()
		if b.isClosed() {
			b.mu.Unlock()
			_ = nc.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.wg.Add(2)
		b.mu.Unlock()
		b.stats.connections.Add(1)
		b.log.Debug("rmqtest: connection", "remote", nc.RemoteAddr())
		go c.readLoop()
		go c.workLoop()
	}
}

func (c *conn) readLoop() {
	b := c.b
	defer b.wg.Done()
	// Closing work lets the worker finish what was read (a client's last
	// one-way offset updates arrive just before it closes) and clean up.
	defer close(c.work)
	r := bufio.NewReaderSize(c.nc, 64<<10)
	maxFrame := b.cfg.MaxMessageSize + frameHeadroom
	for {
		cmd, err := readCommand(r, maxFrame)
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) {
				b.log.Warn("rmqtest: malformed frame", "remote", c.nc.RemoteAddr(), "err", err)
				if !fe.known {
					return
				}
				code, remark := respSystemError, "malformed request: "+err.Error()
				if fe.tooLarge {
					code, remark = respMessageIllegal, "request frame exceeds the size limit"
				}
				_ = c.write(newResponse(&command{Opaque: fe.opaque}, code, remark))
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				b.log.Debug("rmqtest: read", "remote", c.nc.RemoteAddr(), "err", err)
			}
			return
		}
		if cmd.isResponse() {
			// Clients answer nothing this broker waits for.
			continue
		}
		if c.draining() {
			// A connection being dropped refuses new requests.
			if !cmd.isOneway() {
				_ = c.write(newResponse(cmd, respServiceNotAvailable, dropRemark))
			}
			continue
		}
		if b.log.Enabled(context.Background(), slog.LevelDebug) {
			b.log.Debug("rmqtest: request", "code", cmd.Code, "opaque", cmd.Opaque,
				"remote", c.nc.RemoteAddr(), "topic", cmd.ext("topic"), "queueId", cmd.ext("queueId"))
		}
		switch cmd.Code {
		case codeSendMessage, codeSendMessageV2, codeSendBatchMessage:
			if b.pause.isPaused() {
				b.stats.sendsRefused.Add(1)
				_ = c.write(newResponse(cmd, respServiceNotAvailable, "broker paused"))
				continue
			}
		case codePullMessage:
			select {
			case c.pulls <- struct{}{}:
			default:
				_ = c.write(newResponse(cmd, respSystemBusy, "too many pulls in flight"))
				continue
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() { <-c.pulls }()
				if !b.pause.wait(c.done) {
					return
				}
				if resp := b.handlePull(c, cmd); resp != nil {
					c.reply(resp)
				}
			}()
			continue
		}
		c.work <- cmd
	}
}

// workLoop processes a connection's requests (other than pulls) one at a
// time, in arrival order, so one-way offset updates and unlocks keep their
// order.
func (c *conn) workLoop() {
	b := c.b
	defer b.wg.Done()
	defer func() {
		c.close()
		b.forgetConn(c)
	}()
	for cmd := range c.work {
		if !b.pause.wait(b.closed) {
			continue // closing: drain without processing
		}
		resp := b.handle(c, cmd)
		if resp != nil && !cmd.isOneway() {
			c.reply(resp)
		}
	}
}

// forgetConn drops a closed connection from membership and producer
// tables, notifying groups that lost a member.
func (b *Broker) forgetConn(c *conn) {
	b.mu.Lock()
	delete(b.conns, c)
	var changed []string
	for name, g := range b.groups {
		for id, gc := range g.clients {
			if gc == c {
				delete(g.clients, id)
				delete(g.seen, id)
				changed = append(changed, name)
			}
		}
	}
	for _, set := range b.producers {
		delete(set, c)
	}
	b.mu.Unlock()
	for _, g := range changed {
		b.notifyGroup(g, "")
	}
}

// registerConsumer adds clientID to group and reports whether membership
// changed.
func (b *Broker) registerConsumer(c *conn, group, clientID string, subs map[string]string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.groups[group]
	if !ok {
		g = &groupInfo{clients: map[string]*conn{}, seen: map[string]time.Time{}, subs: map[string]string{}}
		b.groups[group] = g
	}
	for t, expr := range subs {
		g.subs[t] = expr
	}
	_, had := g.clients[clientID]
	g.clients[clientID] = c
	g.seen[clientID] = time.Now()
	return !had
}

// unregisterConsumer removes clientID from group and reports whether it
// was there.
func (b *Broker) unregisterConsumer(group, clientID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.groups[group]
	if !ok {
		return false
	}
	if _, had := g.clients[clientID]; !had {
		return false
	}
	delete(g.clients, clientID)
	delete(g.seen, clientID)
	return true
}

// consumerReaper drops consumers whose heartbeats stopped for
// ConsumerExpiry.
func (b *Broker) consumerReaper() {
	defer b.wg.Done()
	tick := min(max(b.cfg.ConsumerExpiry/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-b.closed:
			return
		case <-t.C:
			b.expireConsumers(time.Now())
		}
	}
}

// expireConsumers removes every consumer not heard from within
// ConsumerExpiry, notifies the rest of its group and drops its connection
// (answering its held long polls first), as a real broker closes an
// expired channel.
func (b *Broker) expireConsumers(now time.Time) {
	type gone struct {
		group, id string
		c         *conn
	}
	var expired []gone
	b.mu.Lock()
	for name, g := range b.groups {
		for id, seen := range g.seen {
			if now.Sub(seen) > b.cfg.ConsumerExpiry {
				expired = append(expired, gone{name, id, g.clients[id]})
				delete(g.clients, id)
				delete(g.seen, id)
			}
		}
	}
	b.mu.Unlock()
	drop := map[*conn]bool{}
	for _, e := range expired {
		b.stats.consumersExpired.Add(1)
		b.log.Info("rmqtest: consumer expired (no heartbeat)", "group", e.group, "client", e.id)
		b.notifyGroup(e.group, e.id)
		if e.c != nil && !drop[e.c] {
			drop[e.c] = true
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				e.c.dropGracefully()
			}()
		}
	}
}

// groupsOf returns the consumer groups clientID belongs to.
func (b *Broker) groupsOf(clientID string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for name, g := range b.groups {
		if _, ok := g.clients[clientID]; ok {
			out = append(out, name)
		}
	}
	return out
}

func (b *Broker) addProducer(c *conn, group string) {
	if group == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	set, ok := b.producers[group]
	if !ok {
		set = map[*conn]struct{}{}
		b.producers[group] = set
	}
	set[c] = struct{}{}
}

// producerConn picks a live connection of a producer group, preferring
// prefer.
func (b *Broker) producerConn(group string, prefer *conn) *conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	set := b.producers[group]
	if prefer != nil {
		if _, ok := set[prefer]; ok {
			return prefer
		}
	}
	for c := range set {
		return c
	}
	return nil
}

// consumerIDs returns a group's client IDs, sorted.
func (b *Broker) consumerIDs(group string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.groups[group]
	if !ok {
		return []string{}
	}
	ids := make([]string, 0, len(g.clients))
	for id := range g.clients {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// subscription returns the tag expression a group subscribed to topic with.
func (b *Broker) subscription(group, topic string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.groups[group]
	if !ok {
		return "", false
	}
	expr, ok := g.subs[topic]
	return expr, ok
}

// notifyGroup sends NOTIFY_CONSUMER_IDS_CHANGED to every member of group
// except skipClientID, so they rebalance now rather than within 20 s.
func (b *Broker) notifyGroup(group, skipClientID string) {
	b.mu.Lock()
	var targets []*conn
	if g, ok := b.groups[group]; ok {
		for id, c := range g.clients {
			if id != skipClientID && c != nil {
				targets = append(targets, c)
			}
		}
	}
	b.mu.Unlock()
	for _, c := range targets {
		cmd := newRequest(codeNotifyConsumerIdsChanged, b.opaque.Add(1), true,
			map[string]string{"consumerGroup": group}, nil)
		_ = c.write(cmd)
	}
}

// schedule runs f after d on a timer that Close cancels.
func (b *Broker) schedule(d time.Duration, f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		b.mu.Lock()
		_, live := b.timers[t]
		delete(b.timers, t)
		b.mu.Unlock()
		if live && !b.isClosed() {
			f()
		}
	})
	b.timers[t] = struct{}{}
}

// transactionChecker asks producers about half messages left unsettled for
// TransactionCheckInterval, up to MaxTransactionChecks times each.
func (b *Broker) transactionChecker() {
	defer b.wg.Done()
	tick := min(max(b.cfg.TransactionCheckInterval/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-b.closed:
			return
		case <-t.C:
			b.checkHalves(time.Now())
		}
	}
}

func (b *Broker) checkHalves(now time.Time) {
	type check struct {
		c   *conn
		msg *storedMessage
		h   halfMessage
	}
	var checks []check
	s := b.store
	s.mu.Lock()
	for off, h := range s.halves {
		if now.Sub(h.lastCheck) < b.cfg.TransactionCheckInterval {
			continue
		}
		if h.checks >= b.cfg.MaxTransactionChecks {
			delete(s.halves, off)
			b.stats.halfDiscarded.Add(1)
			b.log.Warn("rmqtest: half message discarded after max checks",
				"topic", h.realTopic, "uniqKey", h.msg.Props[propUniqKey], "checks", h.checks)
			continue
		}
		checks = append(checks, check{msg: h.msg.clone(), h: *h})
		h.lastCheck = now
	}
	s.mu.Unlock()
	for _, ck := range checks {
		c := b.producerConn(ck.h.group, ck.h.origin)
		if c == nil {
			// No producer of the group is connected; the half waits for
			// one without using up a check.
			continue
		}
		s.mu.Lock()
		if h, ok := s.halves[ck.msg.CommitOffset]; ok {
			h.checks++
			ck.msg.Props[propTranCheckTimes] = itoa(int64(h.checks))
			h.msg.Props[propTranCheckTimes] = ck.msg.Props[propTranCheckTimes]
		}
		s.mu.Unlock()
		m := ck.msg
		halfOffsetMsgID := b.msgID(m.CommitOffset)
		tranOffset := m.QueueOffset
		m.Topic, m.QueueID = ck.h.realTopic, ck.h.realQueue
		body := encodeStored(nil, m, b.ip, b.port)
		ext := map[string]string{
			"tranStateTableOffset": itoa(tranOffset),
			"commitLogOffset":      itoa(m.CommitOffset),
			"msgId":                m.Props[propUniqKey],
			"transactionId":        m.Props[propUniqKey],
			"offsetMsgId":          halfOffsetMsgID,
		}
		cmd := newRequest(codeCheckTransactionState, b.opaque.Add(1), true, ext, body)
		b.stats.txChecks.Add(1)
		_ = c.write(cmd)
	}
}
