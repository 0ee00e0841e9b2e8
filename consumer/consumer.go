package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	rmq "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	// The client's Info lines go to slog at Debug (see
	// producer.SetClientLogger), in consumer-only programs too.
	_ "github.com/idemq/idemq/internal/clientlog"
	"github.com/idemq/idemq/internal/remoting"
	"github.com/idemq/idemq/middleware"
)

// Errors returned by a Consumer.
var (
	// ErrClosed is returned by Start after Shutdown began.
	ErrClosed = errors.New("consumer: shut down")
	// ErrShutdownTimeout is wrapped by Shutdown when handlers were still
	// running at its deadline. Their contexts were cancelled; their
	// messages were not acknowledged and will be redelivered.
	ErrShutdownTimeout = errors.New("consumer: handlers still running at the shutdown deadline")
)

// Stats counts what a Consumer has done since New.
type Stats struct {
	// Delivered counts messages run through the chain.
	Delivered int64
	// Succeeded counts messages acknowledged: processed, duplicates and
	// dead letters.
	Succeeded int64
	// Retried counts messages that failed and were handed back for
	// redelivery (a batch-mate of a failed message is not counted here).
	Retried int64
	// Unburied counts permanent failures that reached the consumer
	// because no DeadLetter middleware buried them: never acknowledged
	// (that would drop them), they are logged at Error level and handed
	// back for redelivery like any failure (also counted in Retried), and
	// reach the broker's %DLQ% after MaxAttempts.
	Unburied int64
	// OutageRetries counts runs of a delivery retried in place because
	// the store could not decide (dedup.IsInfrastructure: unavailable, or
	// a conflict it gave up on), after a consumer-wide pause; such a retry
	// is not an attempt.
	OutageRetries int64
	// Panics counts deliveries that panicked, whether the chain's Recover
	// middleware or the consumer itself recovered the panic.
	Panics int64
	// Refused counts messages handed back without running the handler
	// because Shutdown had begun.
	Refused int64
	// Processed, Duplicates and DeadLetters split Succeeded by what the
	// chain did: the handler ran and succeeded; the message was a
	// duplicate, acknowledged without running the handler; the message was
	// buried as a dead letter.
	Processed, Duplicates, DeadLetters int64
	// WithoutID counts deliveries of messages without the idemq message ID
	// property (idemq.PropertyMessageID), sent by a producer that is not
	// idemq's: unless Config.Dedup.KeyFunc gives them a business key, they
	// are deduplicated on RocketMQ's MsgId, which a re-send of the message
	// changes. The first one of each topic is logged at Warn level.
	WithoutID int64
	// InFlight is the number of client callbacks running the chain right
	// now (each holds one message, or up to BatchSize). The chain's
	// in_flight gauge (Config.Registerer) counts messages.
	InFlight int64
}

type counters struct {
	delivered, succeeded, retried, unburied, outageRetries, panics, refused atomic.Int64
	processed, duplicates, deadLetters, withoutID                           atomic.Int64
}

// Consumer is a RocketMQ push consumer that runs every message through an
// idemq handler chain. Create it with New, then Start it; Shutdown stops
// it for good (a stopped Consumer cannot be restarted: create a new one).
type Consumer struct {
	cfg     Config
	ns      primitive.NamesrvAddr
	handler idemq.Handler
	log     *slog.Logger
	stats   counters
	// outage paces the in-place retries of deliveries that failed for
	// infrastructure (see process).
	outage outageBackoff
	// warnedTopics holds the topics whose first message without an idemq
	// ID was logged.
	warnedTopics sync.Map
	// retention holds the channels of the retention work Start began;
	// stopRetention ends it.
	retention     []<-chan struct{}
	stopRetention context.CancelFunc

	// baseCtx is the parent of every handler's context; cancel ends it
	// when Shutdown gives up waiting.
	baseCtx context.Context
	cancel  context.CancelFunc

	// gate guards stopping against in-flight registration, so that no
	// callback enters after Shutdown began waiting.
	gate     sync.Mutex
	stopping bool
	inflight sync.WaitGroup
	running  atomic.Int64

	// released is closed once the client is shut down: callbacks refused
	// during shutdown wait for it, so that the client ignores their result
	// (see refuse).
	released chan struct{}
	// fastPath is the fast path the consumer built (Config.FastPath); its
	// queued markers are written at Shutdown.
	fastPath *redisdedup.FastPath

	// life serialises Start and Shutdown.
	life      sync.Mutex
	client    rocketmq.PushConsumer
	started   bool
	stopped   chan struct{} // closed when Shutdown finished
	stopErr   error
	stopBegun atomic.Bool
}

// New checks cfg, applies its defaults, resolves the name servers and
// builds the handler chain: middleware.Standard from Store (see Config),
// unless cfg says otherwise explicitly (WithoutDedup, CustomChain). It
// does not connect: Start does.
func New(cfg Config) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	chain, fp, err := cfg.chain()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	built := false
	defer func() {
		if fp != nil && !built {
			_ = fp.Close(context.Background())
		}
	}()
	h, err := idemq.Chain(cfg.Handler, append(cfg.Middleware, chain...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := resolveNameServers(ctx, cfg.NameServers)
	if err != nil {
		return nil, err
	}
	built = true
	base, baseCancel := context.WithCancel(context.Background())
	return &Consumer{
		cfg:      cfg,
		ns:       ns,
		handler:  h,
		fastPath: fp,
		log:      cfg.Logger.With(slog.String("consumer_group", cfg.Group)),
		baseCtx:  base,
		cancel:   baseCancel,
		released: make(chan struct{}),
		stopped:  make(chan struct{}),
	}, nil
}

// chain returns the middlewares the handler runs in (inside
// Config.Middleware), and the fast path it built (Config.FastPath), which
// the consumer closes at Shutdown.
func (c Config) chain() ([]idemq.Middleware, *redisdedup.FastPath, error) {
	switch {
	case c.CustomChain != nil:
		return c.CustomChain, nil, nil
	case c.WithoutDedup:
		chain := []idemq.Middleware{middleware.Recover()}
		if c.TracerProvider != nil {
			chain = append(chain, middleware.Tracing(c.TracerProvider))
		}
		if c.Registerer != nil {
			m, err := middleware.Metrics(c.Registerer, c.Metrics)
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, m)
		}
		chain = append(chain, middleware.Logging(c.Logger))
		if c.Timeout > 0 {
			to, err := middleware.Timeout(c.Timeout, c.Logger)
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, to)
		}
		return append(chain, middleware.Recover()), nil, nil
	}
	store := c.Store
	var fp *redisdedup.FastPath
	if c.FastPath != nil {
		fc := c.FastPathConfig
		switch fc.MarkerQueue {
		case 0:
			fc.MarkerQueue = DefaultMarkerQueue
		case -1:
			fc.MarkerQueue = 0
		}
		var err error
		fp, err = middleware.NewFastPath(middleware.StandardConfig{
			Store: c.Store, FastPath: c.FastPath, FastPathConfig: fc, Logger: c.Logger, Registerer: c.Registerer,
		})
		if err != nil {
			return nil, nil, err
		}
		store = fp
	}
	chain, err := middleware.Standard(middleware.StandardConfig{
		Store:          store,
		Ledger:         c.Ledger,
		Dedup:          c.Dedup,
		DeadLetter:     c.DeadLetter,
		RetryPolicy:    c.RetryPolicy,
		Timeout:        c.Timeout,
		Logger:         c.Logger,
		Registerer:     c.Registerer,
		Metrics:        c.Metrics,
		TracerProvider: c.TracerProvider,
	})
	if err != nil {
		if fp != nil {
			_ = fp.Close(context.Background())
		}
		return nil, nil, err
	}
	return chain, fp, nil
}

// Group returns the consumer group.
func (c *Consumer) Group() string { return c.cfg.Group }

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats {
	return Stats{
		Delivered:     c.stats.delivered.Load(),
		Succeeded:     c.stats.succeeded.Load(),
		Retried:       c.stats.retried.Load(),
		Unburied:      c.stats.unburied.Load(),
		OutageRetries: c.stats.outageRetries.Load(),
		Panics:        c.stats.panics.Load(),
		Refused:       c.stats.refused.Load(),
		Processed:     c.stats.processed.Load(),
		Duplicates:    c.stats.duplicates.Load(),
		DeadLetters:   c.stats.deadLetters.Load(),
		WithoutID:     c.stats.withoutID.Load(),
		InFlight:      c.running.Load(),
	}
}

// clientOptions are the push consumer's options. The message model is set
// explicitly: the client's zero value is broadcasting, which drops failed
// messages.
func (c *Consumer) clientOptions() []rmq.Option {
	opts := []rmq.Option{
		rmq.WithNameServer(c.ns),
		rmq.WithGroupName(c.cfg.Group),
		rmq.WithInstance(c.cfg.InstanceName),
		rmq.WithConsumerModel(rmq.Clustering),
		rmq.WithConsumerOrder(c.cfg.Orderly),
		rmq.WithConsumeGoroutineNums(c.cfg.ConsumeGoroutines),
		rmq.WithConsumeMessageBatchMaxSize(c.cfg.BatchSize),
		rmq.WithMaxReconsumeTimes(int32(c.cfg.MaxAttempts)),
		rmq.WithSuspendCurrentQueueTimeMillis(c.cfg.SuspendInterval),
		rmq.WithAutoCommit(true),
	}
	switch c.cfg.StartFrom.from {
	case fromFirst:
		opts = append(opts, rmq.WithConsumeFromWhere(rmq.ConsumeFromFirstOffset))
	case fromTimestamp:
		// The client parses this layout as UTC.
		opts = append(opts, rmq.WithConsumeFromWhere(rmq.ConsumeFromTimestamp),
			rmq.WithConsumeTimestamp(c.cfg.StartFrom.at.UTC().Format("20060102150405")))
	default:
		opts = append(opts, rmq.WithConsumeFromWhere(rmq.ConsumeFromLastOffset))
	}
	return opts
}

// Start checks the stores, creates the client, subscribes, starts the
// store's retention and starts consuming. It returns when the client has
// fetched its routes and sent its first heartbeat; messages flow once the
// group has rebalanced, moments later. ctx bounds what Start does (each
// name server and store check also has a deadline of 10 seconds of its
// own); cancelling it later does not stop the consumer: Shutdown does.
// Start is idempotent; after Shutdown it returns ErrClosed.
//
// Before it starts the client it checks, so that its error says what is
// wrong instead of every delivery failing:
//
//   - the stores (Store and Ledger, when they implement dedup.Checker): a
//     SQL store whose tables are missing or behind fails Start with an
//     error that names the table or migration step and says "run Migrate
//     (or idemq migrate)"; a Redis store that does not answer PING, with
//     its address and the cause;
//   - the fast path's Redis (Config.FastPath): PING, with its address and
//     the cause;
//   - the name servers, for each subscribed topic: no name server answers
//     (an error wrapping the connection failures), or a topic does not
//     exist (a real name server creates none on its own; create topics
//     first, with package topics or mqadmin updateTopic). The client
//     alone reports both as "route info not found".
//
// Then, unless Config.NoRetention is set, it starts the retention of
// every store that implements dedup.RetentionRunner (sqldedup.Store: its
// Janitor, with its metrics registered with Config.Registerer); it runs
// until Shutdown.
func (c *Consumer) Start(ctx context.Context) error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.isStopping() {
		return ErrClosed
	}
	if c.started {
		return nil
	}
	begin := time.Now()
	if err := c.checkStores(ctx); err != nil {
		return fmt.Errorf("consumer: start (group %q): %w", c.cfg.Group, err)
	}
	// The client reports an unreachable name server, and a topic nobody
	// created, both as "route info not found": ask first, and say which.
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, s := range c.cfg.Subscriptions {
		ok, err := remoting.TopicExists(nctx, c.ns, s.Topic)
		if err != nil {
			return fmt.Errorf("consumer: start (group %q): %w", c.cfg.Group, err)
		}
		if !ok {
			return fmt.Errorf("consumer: start (group %q): topic %q does not exist on the name server; create it first (topics.Create, mqadmin updateTopic)", c.cfg.Group, s.Topic)
		}
	}
	if err := c.startRetention(); err != nil {
		return fmt.Errorf("consumer: start (group %q): %w", c.cfg.Group, err)
	}
	started := false
	defer func() {
		if !started {
			c.endRetention()
		}
	}()
	client, err := rocketmq.NewPushConsumer(c.clientOptions()...)
	if err != nil {
		return fmt.Errorf("consumer: new client (group %q, instance %q): %w", c.cfg.Group, c.cfg.InstanceName, err)
	}
	for _, s := range c.cfg.Subscriptions {
		sel := rmq.MessageSelector{Type: rmq.TAG, Expression: s.Tags}
		if err := client.Subscribe(s.Topic, sel, c.consume); err != nil {
			_ = client.Shutdown()
			return fmt.Errorf("consumer: subscribe %q: %w", s.Topic, err)
		}
	}
	if err := client.Start(); err != nil {
		_ = client.Shutdown()
		return fmt.Errorf("consumer: start client (group %q, instance %q): %w", c.cfg.Group, c.cfg.InstanceName, err)
	}
	c.client = client
	c.started = true
	started = true
	c.log.Info("consumer started",
		slog.String("instance", c.cfg.InstanceName),
		slog.Bool("orderly", c.cfg.Orderly),
		slog.Duration("took", time.Since(begin)))
	return nil
}

// resultGrace is how long Shutdown lets the client record the results of
// the callbacks that finished before it shuts the client down.
const resultGrace = 100 * time.Millisecond

// Shutdown stops the consumer gracefully:
//
//  1. from now on, a callback the client starts runs no handler: it is
//     refused and its messages are redelivered later (see below);
//  2. the client stops pulling;
//  3. Shutdown waits for the handlers in flight until ctx is done or
//     ShutdownTimeout has passed; their results are acknowledged or
//     retried as usual;
//  4. the client is shut down, which persists the consumer offsets and
//     releases orderly queue locks.
//
// If handlers are still running at the deadline, their contexts are
// cancelled and the client is shut down anyway; Shutdown returns an error
// wrapping ErrShutdownTimeout and the context's error. A cancelled
// handler's delivery is never acknowledged, even if the chain returned a
// permanent error: its message is sent back for a retry if the client is
// still up when it returns, and otherwise the client ignores the result
// and the message is read again from the uncommitted offset, by another
// consumer of the group or after a restart.
//
// A refused callback waits until the client is shut down before it
// returns RetryLater (concurrent) or SuspendCurrentQueueAMoment (orderly):
// by then the client drops the result of a callback, so the refused
// messages are neither sent back to the retry topic (which would count an
// attempt) nor acknowledged; their offsets are not committed and the
// broker delivers them again.
//
// Shutdown is idempotent and safe to call concurrently; every call returns
// the first call's result once it is done (or its own ctx's error if that
// comes first). It may be called without Start.
func (c *Consumer) Shutdown(ctx context.Context) error {
	if c.stopBegun.CompareAndSwap(false, true) {
		c.stopErr = c.shutdown(ctx)
		close(c.stopped)
		return c.stopErr
	}
	// A later caller waits for the first one, which honours its own ctx.
	select {
	case <-c.stopped:
		return c.stopErr
	case <-ctx.Done():
		return fmt.Errorf("consumer: shutdown still in progress: %w", ctx.Err())
	}
}

func (c *Consumer) shutdown(ctx context.Context) error {
	c.life.Lock()
	defer c.life.Unlock()
	defer c.cancel()

	c.gate.Lock()
	c.stopping = true
	c.gate.Unlock()

	if c.started {
		c.client.Suspend()
	}

	waitCtx, cancel := context.WithTimeout(ctx, c.cfg.ShutdownTimeout)
	defer cancel()
	idle := make(chan struct{})
	go func() {
		c.inflight.Wait()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-waitCtx.Done():
		n := c.running.Load()
		c.cancel()
		err = fmt.Errorf("%w (%d in flight): %w", ErrShutdownTimeout, n, waitCtx.Err())
		c.log.Warn("shutdown deadline passed; cancelling handlers in flight, their messages will be redelivered",
			slog.Int64("in_flight", n))
	}

	if c.started {
		// A callback that just returned has not yet had its result
		// recorded by the client (offset update or send-back), which
		// happens on the client's goroutine after the return; a client
		// shut down in between drops that result and the message comes
		// back as a duplicate. Give it a moment.
		if err == nil {
			time.Sleep(resultGrace)
		}
		if cerr := c.client.Shutdown(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("consumer: shut down client: %w", cerr))
		}
	}
	close(c.released)
	if c.fastPath != nil {
		// No delivery runs any more: write the done markers still queued.
		if ferr := c.fastPath.Close(ctx); ferr != nil {
			c.log.Warn("fast path: done markers still queued at shutdown were not all written; their duplicates go to the store", slog.Any("error", ferr))
		}
	}
	c.endRetention()
	c.log.Info("consumer stopped", slog.Any("stats", c.Stats()))
	return err
}

func (c *Consumer) isStopping() bool {
	c.gate.Lock()
	defer c.gate.Unlock()
	return c.stopping
}

// enter registers a callback in flight, unless Shutdown has begun.
func (c *Consumer) enter() bool {
	c.gate.Lock()
	defer c.gate.Unlock()
	if c.stopping {
		return false
	}
	c.inflight.Add(1)
	c.running.Add(1)
	return true
}

func (c *Consumer) leave() {
	c.running.Add(-1)
	c.inflight.Done()
}

// stores returns Store and Ledger, each once.
func (c *Consumer) stores() []any {
	var out []any
	if c.cfg.Store != nil {
		out = append(out, c.cfg.Store)
	}
	if c.cfg.Ledger != nil && !sameValue(c.cfg.Ledger, c.cfg.Store) {
		out = append(out, c.cfg.Ledger)
	}
	return out
}

// sameValue reports whether a and b are the same comparable value.
func sameValue(a, b any) (same bool) {
	defer func() {
		if recover() != nil {
			same = false // not comparable
		}
	}()
	return a == b
}

// checkStoreTimeout bounds each store check at Start.
const checkStoreTimeout = 10 * time.Second

// checkStores checks Store, Ledger (dedup.Checker) and the fast path's
// Redis.
func (c *Consumer) checkStores(ctx context.Context) error {
	for _, s := range c.stores() {
		ch, ok := s.(dedup.Checker)
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, checkStoreTimeout)
		err := ch.Check(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("store not ready: %w", err)
		}
	}
	if c.cfg.FastPath != nil {
		cctx, cancel := context.WithTimeout(ctx, checkStoreTimeout)
		err := redisdedup.Ping(cctx, c.cfg.FastPath)
		cancel()
		if err != nil {
			return fmt.Errorf("fast path not ready: %w", err)
		}
	}
	return nil
}

// startRetention starts the retention of every store that runs its own
// (dedup.RetentionRunner), unless Config.NoRetention is set.
func (c *Consumer) startRetention() error {
	if c.cfg.NoRetention {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopRetention = cancel
	for _, s := range c.stores() {
		r, ok := s.(dedup.RetentionRunner)
		if !ok {
			continue
		}
		done, err := r.StartRetention(ctx, c.cfg.Registerer)
		if err != nil {
			c.endRetention()
			return fmt.Errorf("start retention: %w", err)
		}
		c.retention = append(c.retention, done)
		c.log.Debug("retention started", slog.String("store", fmt.Sprintf("%T", s)))
	}
	return nil
}

// endRetention stops the retention work and waits for it.
func (c *Consumer) endRetention() {
	if c.stopRetention == nil {
		return
	}
	c.stopRetention()
	for _, done := range c.retention {
		<-done
	}
	c.retention = nil
	c.stopRetention = nil
}
