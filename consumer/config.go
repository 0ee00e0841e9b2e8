package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/internal/nameserver"
	"github.com/idemq/idemq/middleware"
)

// Defaults of Config.
const (
	// DefaultConsumeGoroutines is the client's own default.
	DefaultConsumeGoroutines = 20
	// DefaultBatchSize delivers one message per callback.
	DefaultBatchSize = 1
	// DefaultMaxAttempts matches middleware.DefaultMaxAttempts and
	// RocketMQ's default of 16 redeliveries.
	DefaultMaxAttempts = middleware.DefaultMaxAttempts
	// DefaultSuspendInterval is the shortest pause of an orderly queue
	// after a failure.
	DefaultSuspendInterval = time.Second
	// DefaultMaxSuspendInterval caps the pause of an orderly queue after a
	// failure.
	DefaultMaxSuspendInterval = 30 * time.Second
	// DefaultShutdownTimeout bounds how long Shutdown waits for handlers in
	// flight.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultTagExpression selects every tag.
	DefaultTagExpression = "*"
	// DefaultMarkerQueue is how many done markers of the fast path
	// (Config.FastPath) may wait to be written in the background.
	DefaultMarkerQueue = 4096
)

// Limits of Config.
const (
	// MaxBatchSize is the client's largest ConsumeMessageBatchMaxSize.
	MaxBatchSize = 1024
	// MaxConsumeGoroutines bounds ConsumeGoroutines.
	MaxConsumeGoroutines = 1000
	// MaxMaxAttempts bounds MaxAttempts.
	MaxMaxAttempts = 1000
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("consumer: invalid config")

// ErrNoStore is wrapped by the error New returns for a Config with neither
// a Store nor the explicit choice to run without dedup (WithoutDedup) or
// with a chain of one's own (CustomChain).
var ErrNoStore = errors.New("no dedup store")

// Subscription selects messages of one topic.
type Subscription struct {
	// Topic is the topic to consume. Required.
	Topic string
	// Tags is a RocketMQ tag expression such as "created||paid". Defaults
	// to DefaultTagExpression ("*", every tag).
	Tags string
}

// StartPosition says where a consumer group that has never committed an
// offset on a queue starts reading it (RocketMQ's ConsumeFromWhere). It
// matters only the first time a group meets a queue: afterwards the group
// resumes at its committed offset, and its retry queue always starts at
// its beginning. The zero value is StartFromLast.
type StartPosition struct {
	from startFrom
	at   time.Time
}

type startFrom int

const (
	fromLast startFrom = iota
	fromFirst
	fromTimestamp
)

// Start positions.
var (
	// StartFromLast skips what the queue already holds: a new group
	// consumes only messages stored after its first rebalance. It is
	// RocketMQ's default (CONSUME_FROM_LAST_OFFSET) and the default of
	// Config.StartFrom. Messages sent before the group first started, or
	// between its Start and its first rebalance, are not delivered to it.
	StartFromLast = StartPosition{from: fromLast}
	// StartFromFirst reads each queue from the oldest message the broker
	// still keeps (CONSUME_FROM_FIRST_OFFSET): a new group gets the
	// backlog.
	StartFromFirst = StartPosition{from: fromFirst}
)

// StartFromTimestamp starts each queue at the first message stored at or
// after t (CONSUME_FROM_TIMESTAMP; the broker resolves it to the second).
// t must not be zero.
func StartFromTimestamp(t time.Time) StartPosition {
	return StartPosition{from: fromTimestamp, at: t}
}

// String names the position.
func (p StartPosition) String() string {
	switch p.from {
	case fromFirst:
		return "first"
	case fromTimestamp:
		return "timestamp " + p.at.UTC().Format(time.RFC3339)
	default:
		return "last"
	}
}

// Config configures a Consumer. Zero fields take the defaults named in
// their comments; New applies them and validates the result.
type Config struct {
	// NameServers are the RocketMQ name servers as host:port. Host names
	// are resolved to IP addresses by New, because rocketmq-client-go
	// accepts only IP:port (it rejects "localhost:9876"). Required.
	NameServers []string

	// Group is the consumer group. It also scopes the dedup rows: two
	// groups never share them. Required; at most idemq.MaxKeyLen bytes of
	// [a-zA-Z0-9_%|-].
	Group string

	// InstanceName names the client instance. rocketmq-client-go shares one
	// internal client (connections, routes, rebalancing) among all
	// producers and consumers of a process with the same instance name,
	// which breaks when they use different name servers. Defaults to a
	// name unique to this Consumer ("<group>@<pid>#<n>").
	InstanceName string

	// Subscriptions lists the topics to consume, each at most once.
	// Required.
	Subscriptions []Subscription

	// Handler consumes the messages. Required.
	Handler idemq.Handler

	// Store deduplicates the messages, and, when it implements
	// dedup.Ledger (sqldedup.Store does), also keeps their attempts and
	// dead letters: one value. The consumer runs Handler inside the
	// recommended chain, middleware.Standard, built from Store and the
	// fields below; checks Store at Start (dedup.Checker: a SQL store's
	// tables, a Redis store's PING), and runs its retention in the
	// background from Start to Shutdown (dedup.RetentionRunner; see
	// NoRetention). Required, unless WithoutDedup or CustomChain is set.
	Store dedup.Store

	// Ledger keeps attempts and dead letters for a Store that keeps none
	// (redisdedup's lease store: give it a sqldedup.Store here). It is
	// checked at Start and its retention run like Store's. Defaults to
	// Store.
	Ledger dedup.Ledger

	// WithoutDedup runs Handler without any dedup, explicitly: every
	// redelivery of a message (and RocketMQ redelivers after every
	// failure, rebalance and restart) runs the handler again, and there
	// are no durable attempts and no dead letters. The handler still runs
	// inside Recover, Logging, the Timeout and, when set, Metrics and
	// Tracing. Defaults to false.
	WithoutDedup bool

	// CustomChain replaces the chain the consumer builds: Handler runs
	// inside exactly these middlewares (CustomChain[0] outermost) and
	// nothing else, so dedup, dead letters and the timeout are the
	// chain's own business. Without a DeadLetter middleware a permanent
	// failure has no dead-letter destination: it is never acknowledged,
	// but logged at Error level and retried until the broker's %DLQ%
	// takes it (see the package documentation). A Store set beside it is
	// only checked at Start and cleaned by retention. Defaults to nil: the
	// consumer builds middleware.Standard from Store.
	CustomChain []idemq.Middleware

	// Middleware wraps the chain the consumer runs (Middleware[0]
	// outermost), for cross-cutting work of the user's own. Defaults to
	// none.
	Middleware []idemq.Middleware

	// FastPath, if set, puts a Redis fast path in front of Store
	// (middleware.StandardConfig.FastPath): duplicates are answered from
	// Redis without touching the database, which stays the authority.
	// Start pings it and fails with its address and the cause if it does
	// not answer. Defaults to nil: no fast path.
	FastPath redis.UniversalClient

	// FastPathConfig configures the fast path when FastPath is set
	// (middleware.StandardConfig.FastPathConfig). Defaults to the zero
	// value: redisdedup's defaults, TTL the store's retention, except
	// MarkerQueue: a consumer owns its fast path, so its done markers are
	// written in the background by default (DefaultMarkerQueue of them may
	// wait; Shutdown writes what is queued once the client is down). A
	// fresh message then costs one Redis round trip, the lookup, instead of
	// two. A marker lost in a crash only sends the next duplicate of its
	// key to Store, which answers it. Set MarkerQueue to -1 to write each
	// marker before the delivery is acknowledged.
	FastPathConfig redisdedup.FastPathConfig

	// Dedup configures the Dedup middleware. Set Dedup.KeyFunc to
	// deduplicate by a business key such as "order:123:redpacket" instead
	// of the message ID: the choice to make for messages whose producer is
	// not idemq's (their ID is RocketMQ's MsgId, which a re-send changes)
	// or when two different messages may ask for the same effect. An error
	// from KeyFunc is permanent: the message goes to the dead letters.
	// Defaults to the zero value (key: the message ID).
	Dedup middleware.DedupConfig

	// DeadLetter configures the DeadLetter middleware. DeadLetter.
	// MaxAttempts defaults to MaxAttempts.
	DeadLetter middleware.DeadLetterConfig

	// Timeout bounds each handler run: its context ends, and the error of
	// a handler cut short says "handler timed out after 30s" (it still
	// matches context.DeadlineExceeded); the message is retried like any
	// failure. A handler still running at half of it is reported at Warn
	// level with its message ID, key and topic. It is well below
	// rocketmq-client-go's own consume timeout (15 minutes), after which
	// the client sends a message still in the callback back to the broker.
	// A negative value means no timeout of the consumer's own. Defaults to
	// middleware.DefaultTimeout (30s). Ignored with CustomChain.
	Timeout time.Duration

	// Registerer, if set, receives every metric, registered once: the
	// chain's (middleware.Metrics, among them the in-flight gauge and the
	// messages without an idemq ID), the fast path's and the retention
	// janitor's. Defaults to nil: no metrics. With CustomChain only the
	// janitor's are registered here (the chain registers its own).
	Registerer prometheus.Registerer

	// Metrics names the chain's metrics when Registerer is set. Defaults
	// to middleware's defaults.
	Metrics middleware.MetricsConfig

	// TracerProvider, if set, traces every delivery
	// (middleware.Tracing). Defaults to nil: no tracing. Ignored with
	// CustomChain.
	TracerProvider trace.TracerProvider

	// NoRetention leaves the store's retention (deleting done keys,
	// attempts and redriven dead letters past Retention.Keep) to another
	// process, such as a sidecar that runs sqldedup.Janitor. Defaults to
	// false: the consumer runs the store's retention in the background
	// from Start to Shutdown, a pass at once and one a minute.
	NoRetention bool

	// StartFrom is where a group with no committed offset on a queue
	// starts reading it: StartFromLast (skip the backlog),
	// StartFromFirst (read it) or StartFromTimestamp. Defaults to
	// StartFromLast, RocketMQ's own default: a new group does not see
	// messages sent before it first rebalanced. A group that must see
	// them (a new service reading a topic that already has producers, an
	// example that sends right after starting) sets StartFromFirst.
	StartFrom StartPosition

	// Orderly consumes each queue in order, one callback at a time: a
	// failure pauses the queue (see SuspendInterval) and redelivers the
	// same messages in place, so later messages of the queue wait. Defaults
	// to false: concurrent consumption.
	Orderly bool

	// ConsumeGoroutines bounds the callbacks the client runs at once per
	// topic (concurrent mode). Defaults to DefaultConsumeGoroutines (20).
	ConsumeGoroutines int

	// BatchSize is the most messages the client hands to one callback
	// (1 to MaxBatchSize). Each message runs through the chain on its own,
	// with its own dedup; but the client takes one result per batch, so if
	// one message fails the whole batch is redelivered, and the messages
	// that had succeeded come back as duplicates (dedup acknowledges them
	// without calling the handler). Keep 1 unless handlers are cheap.
	// Defaults to DefaultBatchSize (1).
	BatchSize int

	// MaxAttempts is passed to the client as MaxReconsumeTimes: in
	// concurrent mode the broker moves a message to its own dead-letter
	// queue (%DLQ%<group>) when delivery MaxAttempts+1 fails; in orderly
	// mode the client sends it there after about MaxAttempts+2 failed
	// deliveries. DeadLetter.MaxAttempts defaults to this value (keep it
	// this value or lower): the DeadLetter middleware then buries the
	// message in the ledger at attempt MaxAttempts and acknowledges it, and
	// the broker's %DLQ% is only a backstop for a message whose dead letter
	// could not be stored. The idemq ledger never reads the %DLQ%.
	// Defaults to DefaultMaxAttempts (16).
	MaxAttempts int

	// RetryPolicy computes the delay before a failed message is
	// redelivered: in concurrent mode it is rounded up to a RocketMQ delay
	// level (middleware.RocketMQDelayLevel), in orderly mode it is the
	// queue's pause, within [SuspendInterval, MaxSuspendInterval]. An
	// idemq.RetryAfter delay is honoured as a floor. Defaults to
	// middleware.RetryPolicy{} (1s doubling, jittered, capped at 2h).
	RetryPolicy middleware.RetryPolicy

	// SuspendInterval is the shortest pause of an orderly queue after a
	// failure, before the same messages are delivered again (the client's
	// own default is no pause at all). Defaults to DefaultSuspendInterval
	// (1s).
	SuspendInterval time.Duration

	// MaxSuspendInterval caps the pause of an orderly queue after a
	// failure. Defaults to DefaultMaxSuspendInterval (30s).
	MaxSuspendInterval time.Duration

	// ShutdownTimeout bounds how long Shutdown waits for handlers in
	// flight, whatever the deadline of its context. Defaults to
	// DefaultShutdownTimeout (30s).
	ShutdownTimeout time.Duration

	// Logger receives the consumer's own logs. Defaults to slog.Default().
	// The client library logs through its rlog package, which idemq
	// routes into log/slog with its Info lines at Debug (see
	// producer.SetClientLogger and producer.SetClientInfoLevel).
	Logger *slog.Logger
}

var groupRE = regexp.MustCompile(`^[%|a-zA-Z0-9_-]+$`)

var instanceSeq atomic.Int64

// withDefaults returns c with zero fields set to their defaults. It is the
// only place defaults are applied.
func (c Config) withDefaults() Config {
	if c.InstanceName == "" && c.Group != "" {
		c.InstanceName = fmt.Sprintf("%s@%d#%d", c.Group, os.Getpid(), instanceSeq.Add(1))
	}
	subs := make([]Subscription, len(c.Subscriptions))
	for i, s := range c.Subscriptions {
		if s.Tags == "" {
			s.Tags = DefaultTagExpression
		}
		subs[i] = s
	}
	c.Subscriptions = subs
	c.Middleware = append([]idemq.Middleware(nil), c.Middleware...)
	if c.CustomChain != nil {
		c.CustomChain = append([]idemq.Middleware{}, c.CustomChain...)
	}
	if c.Ledger == nil {
		if l, ok := c.Store.(dedup.Ledger); ok {
			c.Ledger = l
		}
	}
	c.NameServers = append([]string(nil), c.NameServers...)
	if c.ConsumeGoroutines == 0 {
		c.ConsumeGoroutines = DefaultConsumeGoroutines
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	c.RetryPolicy = c.RetryPolicy.WithDefaults()
	if c.SuspendInterval == 0 {
		c.SuspendInterval = DefaultSuspendInterval
	}
	if c.MaxSuspendInterval == 0 {
		c.MaxSuspendInterval = max(DefaultMaxSuspendInterval, c.SuspendInterval)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Timeout == 0 {
		c.Timeout = middleware.DefaultTimeout
	}
	if c.DeadLetter.MaxAttempts == 0 {
		c.DeadLetter.MaxAttempts = c.MaxAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports the first invalid field of a Config with its defaults
// applied.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if len(c.NameServers) == 0 {
		return bad("NameServers is empty")
	}
	for _, a := range c.NameServers {
		if _, _, err := nameserver.Check(a); err != nil {
			return bad("%v", err)
		}
	}
	switch {
	case c.Group == "":
		return bad("Group is empty")
	case len(c.Group) > idemq.MaxKeyLen:
		return bad("Group %q is longer than %d bytes", c.Group, idemq.MaxKeyLen)
	case !groupRE.MatchString(c.Group):
		return bad("Group %q may hold only [a-zA-Z0-9_%%|-]", c.Group)
	case len(c.InstanceName) > 255:
		return bad("InstanceName is longer than 255 bytes")
	case len(c.Subscriptions) == 0:
		return bad("Subscriptions is empty")
	}
	seen := make(map[string]bool, len(c.Subscriptions))
	for i, s := range c.Subscriptions {
		switch {
		case !groupRE.MatchString(s.Topic) || len(s.Topic) > 127:
			return bad("Subscriptions[%d].Topic %q: want 1 to 127 of [a-zA-Z0-9_%%|-]", i, s.Topic)
		case seen[s.Topic]:
			return bad("topic %q is subscribed twice (the client keeps one callback per topic)", s.Topic)
		}
		seen[s.Topic] = true
	}
	if c.Handler == nil {
		return bad("%w", idemq.ErrNilHandler)
	}
	if f, ok := c.Handler.(idemq.HandlerFunc); ok && f == nil {
		return bad("%w", idemq.ErrNilHandler)
	}
	for i, m := range c.Middleware {
		if m == nil {
			return bad("Middleware[%d]: %w", i, idemq.ErrNilMiddleware)
		}
	}
	for i, m := range c.CustomChain {
		if m == nil {
			return bad("CustomChain[%d]: %w", i, idemq.ErrNilMiddleware)
		}
	}
	custom := c.CustomChain != nil
	switch {
	case c.WithoutDedup && custom:
		return bad("WithoutDedup and CustomChain are both set: choose one")
	case c.WithoutDedup && c.Store != nil:
		return bad("WithoutDedup is set beside a Store: drop one of them")
	case custom && len(c.CustomChain) == 0:
		return bad("CustomChain is empty: set Store for the Standard chain, or WithoutDedup to run without dedup")
	case !c.WithoutDedup && !custom && c.Store == nil:
		return bad("%w: Store is nil. Give the consumer a dedup store (a sqldedup.Store, say); "+
			"to run without dedup, where every redelivery runs the handler again, set WithoutDedup: true explicitly", ErrNoStore)
	case !custom && !c.WithoutDedup && c.Ledger == nil:
		return bad("the store %T keeps no ledger of attempts and dead letters: set Ledger (a sqldedup.Store, say)", c.Store)
	case c.FastPath != nil && (c.WithoutDedup || custom):
		return bad("FastPath needs the Standard chain: it goes in front of Store")
	case c.FastPathConfig.MarkerQueue < -1:
		return bad(fmt.Sprintf("FastPathConfig.MarkerQueue %d: want -1 (write each marker before the acknowledgement), 0 (the default, DefaultMarkerQueue) or a queue length", c.FastPathConfig.MarkerQueue))
	}
	switch {
	case c.ConsumeGoroutines < 1 || c.ConsumeGoroutines > MaxConsumeGoroutines:
		return bad("ConsumeGoroutines %d not in [1, %d]", c.ConsumeGoroutines, MaxConsumeGoroutines)
	case c.BatchSize < 1 || c.BatchSize > MaxBatchSize:
		return bad("BatchSize %d not in [1, %d]", c.BatchSize, MaxBatchSize)
	case c.MaxAttempts < 1 || c.MaxAttempts > MaxMaxAttempts:
		return bad("MaxAttempts %d not in [1, %d]", c.MaxAttempts, MaxMaxAttempts)
	case c.SuspendInterval < time.Millisecond:
		return bad("SuspendInterval %s below 1ms", c.SuspendInterval)
	case c.MaxSuspendInterval < c.SuspendInterval:
		return bad("MaxSuspendInterval %s below SuspendInterval %s", c.MaxSuspendInterval, c.SuspendInterval)
	case c.ShutdownTimeout < 0:
		return bad("negative ShutdownTimeout %s", c.ShutdownTimeout)
	case c.StartFrom.from == fromTimestamp && c.StartFrom.at.IsZero():
		return bad("StartFromTimestamp with a zero time")
	}
	if err := c.RetryPolicy.Validate(); err != nil {
		return bad("RetryPolicy: %w", err)
	}
	return nil
}

// resolveNameServers turns host:port into IP:port, as the client demands.
func resolveNameServers(ctx context.Context, addrs []string) (primitive.NamesrvAddr, error) {
	ns, err := nameserver.Resolve(ctx, addrs)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	return ns, nil
}
