// Package rmqtest runs an in-process RocketMQ name server and broker for
// tests and runnable examples, in the spirit of net/http/httptest.
//
// One loopback listener answers both as the name server and as the broker
// (route replies point back at it), speaking the remoting protocol of
// RocketMQ 4.x well enough for the unmodified
// github.com/apache/rocketmq-client-go/v2 (the version idemq pins) to run
// producers, transactional producers and push consumers (concurrent and
// orderly) against it:
//
//	b := rmqtest.NewTest(t, rmqtest.Config{TimeScale: 0.01, Topics: []string{"orders"}})
//	p, _ := rocketmq.NewProducer(producer.WithNameServer(primitive.NamesrvAddr{b.Addr()}), ...)
//
// What it keeps: topics, consumer offsets, consumer-group membership (with
// NOTIFY_CONSUMER_IDS_CHANGED so a group rebalances at once), retries via
// CONSUMER_SEND_MSG_BACK on RocketMQ's delay ladder, dead-letter topics,
// delayed messages, half messages with commit, rollback and check-back, and
// orderly queue locks. Inspection methods (Messages, DLQ, ConsumerOffset,
// HalfMessages, Settled, PulledQueues, Stats) and fault injection
// (DropConnections, FailSendBack, DropSendBack, DelayReplies, Pause,
// RejectSends, HangSends) serve tests.
//
// # Strict by default
//
// It behaves as a real broker where a kinder one would hide a failure a
// user meets on a real cluster. Each behaviour has a test that documents
// it:
//
//   - Topics are not created on a route lookup or a send: a topic nobody
//     created is answered TOPIC_NOT_EXIST (17), so a push consumer's Start
//     fails and a send fails, as on a cluster with
//     autoCreateTopicEnable=false. Create them with Config.Topics,
//     CreateTopic, or UPDATE_AND_CREATE_TOPIC (request code 17, as
//     `mqadmin updateTopic` and package topics send it).
//     Config.AutoCreateTopics restores creation on first use.
//     (TestTopicsAreNotCreatedOnLookup, TestAutoCreateTopics)
//   - A group that never committed an offset on a queue gets
//     QUERY_NOT_FOUND, so the client's ConsumeFromWhere decides: by default
//     the last offset, and a new group skips the backlog.
//     (TestSendPullAndOffsets; consumer.TestLiveStartFrom)
//   - A consumer whose connection closes, or whose heartbeats stop for
//     Config.ConsumerExpiry, is dropped from its group and the other
//     members are notified, so the survivors (or a restarted consumer)
//     rebalance onto every queue. (TestMembershipAndNotify,
//     TestConsumerExpiry)
//   - A send into %RETRY%group (the client's fallback when a send-back
//     fails) whose reconsumeTimes reached maxReconsumeTimes is stored in
//     %DLQ%group, as a send-back past the limit is.
//     (TestRetryTopicSendPastMaxGoesToDLQ, TestSendBackRetryAndDLQ)
//   - Held long polls are answered before the broker drops a connection
//     (DropConnections, DropSendBack, consumer expiry), so a client does
//     not wait out its 30 s pull timeout. (TestFailAndDropSendBack,
//     TestConsumerExpiry)
//
// # Where it still differs from a real broker
//
//   - One listener is both name server and broker; a real name server
//     answers only name-server requests, and a broker only broker ones.
//   - A group's retry topic (%RETRY%group) is routed at once on a lookup.
//     A real broker creates it on the group's first heartbeat and the
//     client learns its route at its next poll of the name server (up to
//     30 s later).
//   - A real 4.x broker answers a new group's offset query with 0, not
//     QUERY_NOT_FOUND, while the queue's first message is still in memory
//     (minOffset 0 and not swapped to disk): on a young topic a new group
//     may read from the start even with CONSUME_FROM_LAST_OFFSET.
//   - With AutoCreateTopics a topic is created on its first lookup; a real
//     broker with autoCreateTopicEnable creates it on the first send, and
//     a consumer's Start before that still fails.
//   - Topics are never shrunk or deleted; a topic's permission and order
//     flag are not kept; a group's retryMaxTimes comes only from requests
//     (default 16).
//   - Everything is in memory: no persistence, replication, retention or
//     deletion; no ACL; loopback only. Tag filters only (no SQL92).
//   - Close is a broker that dies: held long polls are not answered.
//   - Half messages are checked every TransactionCheckInterval from their
//     store time (a real broker checks every 60 s those older than 6 s).
//
// It is a test and development broker, not for production.
package rmqtest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// Config configures a Broker. The zero value is usable: every field has a
// default, applied by New.
type Config struct {
	// QueuesPerTopic is the number of queues of a topic created by
	// Topics, CreateTopic(topic, 0) or AutoCreateTopics. Retry
	// (%RETRY%group) and dead-letter (%DLQ%group) topics always get one.
	// Defaults to 4.
	QueuesPerTopic int

	// TimeScale multiplies every delay-level delay (retries after
	// CONSUMER_SEND_MSG_BACK and messages sent with a DELAY level). 0.01
	// turns level 1 (1 s) into 10 ms and level 3 (10 s) into 100 ms.
	// Defaults to 1 (RocketMQ's real ladder: 1s 5s 10s 30s 1m ... 2h).
	TimeScale float64

	// TransactionCheckInterval is how long a half message stays unsettled
	// before the broker asks a producer of its group
	// (CHECK_TRANSACTION_STATE), and the pause between checks. Defaults to
	// 6 seconds (RocketMQ's transactionTimeOut).
	TransactionCheckInterval time.Duration

	// MaxTransactionChecks is how many checks a half message gets before
	// the broker discards it. Defaults to 15, as RocketMQ.
	MaxTransactionChecks int

	// LongPollMax bounds how long a PULL_MESSAGE with nothing to return is
	// held waiting for a message (the client asks for 20 s). Defaults to
	// 5 seconds.
	LongPollMax time.Duration

	// LockExpiry is how long an orderly consumer's queue lock lasts unless
	// renewed (the client renews every 20 s). As in RocketMQ, a lock is not
	// released when its holder's connection closes, only by UNLOCK_BATCH_MQ
	// or expiry; note that rocketmq-client-go may not unlock queues it
	// loses in a rebalance, so a second orderly consumer may get them only
	// after expiry. Defaults to 60 seconds, as RocketMQ.
	LockExpiry time.Duration

	// MaxMessageSize bounds a message body (and the total of a batch).
	// Larger sends are refused with code 13 (MESSAGE_ILLEGAL), which the
	// producer returns as an error without retrying. Defaults to 4 MiB.
	MaxMessageSize int

	// AutoCreateTopics makes the broker create any topic on its first
	// route lookup or send, with QueuesPerTopic queues, as the lenient
	// rmqtest of old did. Off by default: like a real name server and a
	// broker with autoCreateTopicEnable=false, a topic nobody created is
	// answered TOPIC_NOT_EXIST (17), so a push consumer's Start fails
	// with "route info not found" and a send fails. Create topics with
	// Topics, CreateTopic or the UPDATE_AND_CREATE_TOPIC request
	// (package topics, `mqadmin updateTopic`). Retry topics
	// (%RETRY%group) are always created by the broker itself.
	AutoCreateTopics bool

	// Topics are created, with QueuesPerTopic queues each, before New
	// returns: a cluster an operator prepared.
	Topics []string

	// ConsumerExpiry is how long a consumer stays in its group without a
	// heartbeat (the client sends one every 30 s). A consumer past it is
	// dropped from its group, the others are notified
	// (NOTIFY_CONSUMER_IDS_CHANGED) and its connection is dropped (held
	// long polls answered first), as a real broker's channel expiry.
	// Defaults to 120 seconds, as RocketMQ.
	ConsumerExpiry time.Duration

	// Logger receives the broker's logs: connections, unknown request
	// codes, malformed frames. Defaults to discarding them.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultQueuesPerTopic           = 4
	DefaultTimeScale                = 1.0
	DefaultTransactionCheckInterval = 6 * time.Second
	DefaultMaxTransactionChecks     = 15
	DefaultLongPollMax              = 5 * time.Second
	DefaultLockExpiry               = 60 * time.Second
	DefaultMaxMessageSize           = 4 << 20
	DefaultConsumerExpiry           = 120 * time.Second
)

// Names the broker reports in routes.
const (
	// BrokerName is the broker name in route replies and MessageQueues.
	BrokerName = "rmqtest-broker"
	// ClusterName is the cluster name in route replies.
	ClusterName = "rmqtest"
)

// ErrClosed is returned by operations on a closed Broker.
var ErrClosed = errors.New("rmqtest: broker closed")

// errBadConfig reports an invalid Config.
var errBadConfig = errors.New("rmqtest: invalid config")

func (c Config) withDefaults() (Config, error) {
	if c.QueuesPerTopic == 0 {
		c.QueuesPerTopic = DefaultQueuesPerTopic
	}
	if c.TimeScale == 0 {
		c.TimeScale = DefaultTimeScale
	}
	if c.TransactionCheckInterval == 0 {
		c.TransactionCheckInterval = DefaultTransactionCheckInterval
	}
	if c.MaxTransactionChecks == 0 {
		c.MaxTransactionChecks = DefaultMaxTransactionChecks
	}
	if c.LongPollMax == 0 {
		c.LongPollMax = DefaultLongPollMax
	}
	if c.LockExpiry == 0 {
		c.LockExpiry = DefaultLockExpiry
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.ConsumerExpiry == 0 {
		c.ConsumerExpiry = DefaultConsumerExpiry
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, t := range c.Topics {
		if err := validTopic(t); err != nil {
			return c, fmt.Errorf("%w: Topics: %v", errBadConfig, err)
		}
	}
	switch {
	case c.QueuesPerTopic < 1 || c.QueuesPerTopic > 1024:
		return c, fmt.Errorf("%w: QueuesPerTopic %d not in [1, 1024]", errBadConfig, c.QueuesPerTopic)
	case c.TimeScale < 0:
		return c, fmt.Errorf("%w: negative TimeScale %v", errBadConfig, c.TimeScale)
	case c.TransactionCheckInterval < 0:
		return c, fmt.Errorf("%w: negative TransactionCheckInterval", errBadConfig)
	case c.MaxTransactionChecks < 0:
		return c, fmt.Errorf("%w: negative MaxTransactionChecks", errBadConfig)
	case c.LongPollMax < 0:
		return c, fmt.Errorf("%w: negative LongPollMax", errBadConfig)
	case c.ConsumerExpiry < 0:
		return c, fmt.Errorf("%w: negative ConsumerExpiry", errBadConfig)
	case c.LockExpiry < 0:
		return c, fmt.Errorf("%w: negative LockExpiry", errBadConfig)
	case c.MaxMessageSize < 0 || c.MaxMessageSize > 256<<20:
		return c, fmt.Errorf("%w: MaxMessageSize %d not in [0, 256 MiB]", errBadConfig, c.MaxMessageSize)
	}
	return c, nil
}

// Stats counts what the broker has done since New.
type Stats struct {
	// Sends counts messages accepted by SEND_MESSAGE and batch sends (one
	// per message), half messages included.
	Sends int64
	// SendsRefused counts send requests answered with an error (RejectSends,
	// Pause, oversized or malformed messages).
	SendsRefused int64
	// Pulls counts PULL_MESSAGE requests answered.
	Pulls int64
	// SendBacks counts CONSUMER_SEND_MSG_BACK requests that stored a retry
	// or dead-letter copy.
	SendBacks int64
	// SendBacksFailed counts CONSUMER_SEND_MSG_BACK requests answered with
	// an error or dropped by fault injection.
	SendBacksFailed int64
	// DeadLettered counts messages written to a %DLQ% topic.
	DeadLettered int64
	// Heartbeats counts HEART_BEAT requests.
	Heartbeats int64
	// TransactionChecks counts CHECK_TRANSACTION_STATE requests sent.
	TransactionChecks int64
	// Commits and Rollbacks count settled half messages.
	Commits, Rollbacks int64
	// HalfDiscarded counts half messages dropped after MaxTransactionChecks.
	HalfDiscarded int64
	// Connections counts accepted client connections.
	Connections int64
	// TopicsCreated counts UPDATE_AND_CREATE_TOPIC requests served.
	TopicsCreated int64
	// ConsumersExpired counts consumers dropped from a group for want of
	// heartbeats (ConsumerExpiry).
	ConsumersExpired int64
}

type counters struct {
	sends, sendsRefused, pulls, sendBacks, sendBacksFailed, deadLettered atomic.Int64
	heartbeats, txChecks, commits, rollbacks, halfDiscarded, connections atomic.Int64
	topicsCreated, consumersExpired                                      atomic.Int64
}

// Broker is a running in-process RocketMQ name server and broker. All
// methods are safe for concurrent use.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	ln    net.Listener
	addr  string
	ip    [4]byte
	port  int32
	store *store
	stats counters

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup

	// mu guards conns, groups, producers and timers.
	mu        sync.Mutex
	conns     map[*conn]struct{}
	groups    map[string]*groupInfo
	producers map[string]map[*conn]struct{}
	timers    map[*time.Timer]struct{}
	// pulled records the queues each group has pulled from.
	pulled map[offsetKey]struct{}

	opaque atomic.Int32

	// Fault injection.
	failSendBack atomic.Int64
	dropSendBack atomic.Int64
	rejectSends  atomic.Int64
	hangSends    atomic.Int64
	replyDelay   atomic.Int64
	pause        pauseGate
}

// groupInfo is one consumer group's membership.
type groupInfo struct {
	clients map[string]*conn
	// seen is each client's last heartbeat.
	seen map[string]time.Time
	// subs maps a topic to the subscription expression from heartbeats.
	subs map[string]string
}

// New starts a broker listening on a free loopback port.
func New(cfg Config) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("rmqtest: listen: %w", err)
	}
	tcp := ln.Addr().(*net.TCPAddr)
	b := &Broker{
		cfg:       cfg,
		log:       cfg.Logger,
		ln:        ln,
		addr:      tcp.String(),
		port:      int32(tcp.Port),
		store:     newStore(cfg.QueuesPerTopic),
		closed:    make(chan struct{}),
		conns:     make(map[*conn]struct{}),
		groups:    make(map[string]*groupInfo),
		producers: make(map[string]map[*conn]struct{}),
		timers:    make(map[*time.Timer]struct{}),
		pulled:    make(map[offsetKey]struct{}),
	}
	copy(b.ip[:], tcp.IP.To4())
	for _, t := range cfg.Topics {
		b.store.createTopic(t, cfg.QueuesPerTopic)
	}
	b.pause.init()
	b.wg.Add(3)
	go b.acceptLoop()
	go b.transactionChecker()
	go b.consumerReaper()
	b.log.Info("rmqtest: broker listening", "addr", b.addr)
	return b, nil
}

// NewTest starts a broker for t and closes it in t.Cleanup. It fails the
// test if the broker cannot start.
func NewTest(t testing.TB, cfg Config) *Broker {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("rmqtest: start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Addr returns the listener address, "127.0.0.1:port". It is both the name
// server address (primitive.NamesrvAddr{b.Addr()}) and the broker address.
func (b *Broker) Addr() string { return b.addr }

// Close stops the listener, closes every connection, cancels pending
// delayed deliveries and waits for the broker's goroutines. It is
// idempotent and always returns nil after the first call.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.closed)
		err = b.ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.close()
		}
		for t := range b.timers {
			t.Stop()
		}
		b.timers = map[*time.Timer]struct{}{}
		b.mu.Unlock()
		b.wg.Wait()
		b.log.Info("rmqtest: broker closed", "addr", b.addr)
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (b *Broker) isClosed() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// --- Inspection ---------------------------------------------------------

// Messages returns the messages stored in topic, in store order, as a
// consumer would decode them (retry copies keep the %RETRY% topic here;
// the client restores the original topic on delivery). Half messages and
// delayed messages not yet due are not included.
func (b *Broker) Messages(topic string) []*primitive.MessageExt {
	return b.toExts(b.store.topicMessages(topic))
}

// DLQ returns the dead-lettered messages of a consumer group (the topic
// %DLQ%group).
func (b *Broker) DLQ(group string) []*primitive.MessageExt {
	return b.Messages(dlqTopicPrefix + group)
}

// RetryMessages returns the retry copies of a consumer group (the topic
// %RETRY%group), due ones only.
func (b *Broker) RetryMessages(group string) []*primitive.MessageExt {
	return b.Messages(retryTopicPrefix + group)
}

// ConsumerOffset returns the committed offset of a group on one queue (the
// offset of the next message to consume), or -1 if none was committed.
func (b *Broker) ConsumerOffset(group, topic string, queueID int) int64 {
	off, ok := b.store.consumerOffset(group, topic, int32(queueID))
	if !ok {
		return -1
	}
	return off
}

// CreateTopic creates topic with queues queues (QueuesPerTopic if
// queues is 0), or grows an existing topic to that many, as an operator's
// `mqadmin updateTopic` would. It is the in-process shortcut of the
// UPDATE_AND_CREATE_TOPIC request.
func (b *Broker) CreateTopic(topic string, queues int) error {
	if err := validTopic(topic); err != nil {
		return fmt.Errorf("rmqtest: CreateTopic: %w", err)
	}
	if queues == 0 {
		queues = b.cfg.QueuesPerTopic
	}
	if queues < 1 || queues > 1024 {
		return fmt.Errorf("rmqtest: CreateTopic: %d queues not in [1, 1024]", queues)
	}
	b.store.createTopic(topic, queues)
	return nil
}

// Topics returns the names of all topics, sorted, including per-group
// retry and dead-letter topics once used.
func (b *Broker) Topics() []string { return b.store.topicNames() }

// HalfMessages returns the unsettled transactional (half) messages, with
// their real topic, in store order.
func (b *Broker) HalfMessages() []*primitive.MessageExt {
	halves := b.store.halfList()
	msgs := make([]*storedMessage, len(halves))
	for i, h := range halves {
		m := h.msg
		m.Topic, m.QueueID = h.realTopic, h.realQueue
		msgs[i] = m
	}
	return b.toExts(msgs)
}

// ConsumerIDs returns the client IDs registered in a consumer group,
// sorted.
func (b *Broker) ConsumerIDs(group string) []string {
	return b.consumerIDs(group)
}

// QueueLockOwner returns the client ID holding an orderly-consumer lock on
// a queue, and whether the lock is live.
func (b *Broker) QueueLockOwner(group, topic string, queueID int) (string, bool) {
	return b.store.lockOwner(group, topic, int32(queueID), time.Now())
}

// Settled reports whether the group has nothing left to receive from
// topics: on every queue of each topic and of the group's retry topic it
// has committed an offset at the queue's end, and no retry or delayed
// message for them is still waiting for its time. Once a group is settled
// the broker has had every chance to redeliver: a test that expects no
// further delivery asserts it after Settled holds, not after a sleep.
// (A consumer commits offsets every few seconds; poll with a timeout.)
func (b *Broker) Settled(group string, topics ...string) bool {
	all := append(append([]string(nil), topics...), retryTopicPrefix+group)
	return b.store.settled(group, all)
}

// PulledQueues returns how many queues of topic the group has pulled from
// so far. A push consumer pulls a queue once its rebalance assigned it and
// read its start offset, so PulledQueues reaching the topic's queue count
// (and 1 for %RETRY%group) says the consumer's first rebalance is done.
func (b *Broker) PulledQueues(group, topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k := range b.pulled {
		if k.group == group && k.topic == topic {
			n++
		}
	}
	return n
}

func (b *Broker) notePull(group, topic string, queue int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pulled[offsetKey{group, topic, queue}] = struct{}{}
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	s := &b.stats
	return Stats{
		Sends:             s.sends.Load(),
		SendsRefused:      s.sendsRefused.Load(),
		Pulls:             s.pulls.Load(),
		SendBacks:         s.sendBacks.Load(),
		SendBacksFailed:   s.sendBacksFailed.Load(),
		DeadLettered:      s.deadLettered.Load(),
		Heartbeats:        s.heartbeats.Load(),
		TransactionChecks: s.txChecks.Load(),
		Commits:           s.commits.Load(),
		Rollbacks:         s.rollbacks.Load(),
		HalfDiscarded:     s.halfDiscarded.Load(),
		Connections:       s.connections.Load(),
		TopicsCreated:     s.topicsCreated.Load(),
		ConsumersExpired:  s.consumersExpired.Load(),
	}
}

// toExts converts stored messages to what the client decodes.
func (b *Broker) toExts(msgs []*storedMessage) []*primitive.MessageExt {
	out := make([]*primitive.MessageExt, 0, len(msgs))
	for _, m := range msgs {
		decoded := primitive.DecodeMessage(encodeStored(nil, m, b.ip, b.port))
		if len(decoded) != 1 {
			continue
		}
		ext := decoded[0]
		ext.Queue.Topic = m.Topic
		ext.Queue.BrokerName = BrokerName
		out = append(out, ext)
	}
	return out
}

// --- Fault injection ----------------------------------------------------

// DropConnections closes every client connection. Clients reconnect on
// their next request; consumer-group membership is rebuilt from their next
// heartbeat (the client sends one every 30 s), and until then the broker
// treats them as gone, as RocketMQ does when a channel closes.
//
// rocketmq-client-go never fails a request pending on a closed connection:
// it waits out the request's timeout (30 s for a pull). So
// DropConnections first answers held long-polls, and for 50 ms any new
// request, with an error (code 14, after which a push consumer pulls again
// 3 s later), then half-closes each connection and waits up to a second
// for the client to close its side (a reset could destroy the replies). A
// request that still reaches the broker after that is lost and costs the
// client its timeout. DropConnections returns once the connections are
// closed.
func (b *Broker) DropConnections() {
	b.mu.Lock()
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(c.dropGracefully)
	}
	wg.Wait()
}

// FailSendBack makes the next n CONSUMER_SEND_MSG_BACK requests get an
// error reply (code 1) without storing a retry copy. The pinned
// rocketmq-client-go then sends the message into %RETRY%group itself, at
// delay level 3+ReconsumeTimes (v2.1.2 acked it and lost it, upstream
// issue 1106).
func (b *Broker) FailSendBack(n int) { b.failSendBack.Store(int64(max(n, 0))) }

// DropSendBack makes the next n CONSUMER_SEND_MSG_BACK requests go
// unanswered and drops the client's connection (answering its held long
// polls first, as DropConnections). The client times out (3 s) and falls
// back to sending the message into %RETRY%group itself.
func (b *Broker) DropSendBack(n int) { b.dropSendBack.Store(int64(max(n, 0))) }

// RejectSends makes the next n send requests (single or batch) fail with
// code 2 (SYSTEM_BUSY). The client does not retry that code, so each
// rejected request is one failed SendSync.
func (b *Broker) RejectSends(n int) { b.rejectSends.Store(int64(max(n, 0))) }

// HangSends makes the next n send requests (single or batch) go
// unanswered: the broker reads them, stores nothing and never replies, as
// a broker that hangs mid-request. The client gives up on such an attempt
// after its per-attempt timeout and retries.
func (b *Broker) HangSends(n int) { b.hangSends.Store(int64(max(n, 0))) }

// DelayReplies delays every reply by d (0 turns the delay off). Requests
// are still processed at once; only the answers are late, so a client
// whose timeout is shorter than d sees a timeout for a request that took
// effect.
func (b *Broker) DelayReplies(d time.Duration) { b.replyDelay.Store(int64(max(d, 0))) }

// Pause stops the broker answering: requests received while paused are
// held, unprocessed, until Resume (clients see timeouts), except sends,
// which are refused at once with code 14 (SERVICE_NOT_AVAILABLE). Delayed
// deliveries and transaction checks keep running.
func (b *Broker) Pause() { b.pause.set(true) }

// Resume ends a Pause; held requests are then processed in order.
func (b *Broker) Resume() { b.pause.set(false) }

// takeToken decrements a fault counter if positive and reports whether it
// did.
func takeToken(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// pauseGate blocks request processing while the broker is paused.
type pauseGate struct {
	mu     sync.Mutex
	paused bool
	// resumed is closed when the gate opens.
	resumed chan struct{}
}

func (g *pauseGate) init() {
	g.resumed = make(chan struct{})
	close(g.resumed)
}

func (g *pauseGate) set(paused bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if paused == g.paused {
		return
	}
	g.paused = paused
	if paused {
		g.resumed = make(chan struct{})
	} else {
		close(g.resumed)
	}
}

func (g *pauseGate) isPaused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

// wait blocks until the gate is open or done is closed; it reports whether
// the gate is open.
func (g *pauseGate) wait(done <-chan struct{}) bool {
	g.mu.Lock()
	ch := g.resumed
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}

// sleepCtx sleeps for d unless done closes first.
func sleepCtx(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
