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
	"github.com/idemq/idemq/internal/remoting"
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
}

type counters struct {
	delivered, succeeded, retried, unburied, outageRetries, panics, refused atomic.Int64
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

	// life serialises Start and Shutdown.
	life      sync.Mutex
	client    rocketmq.PushConsumer
	started   bool
	stopped   chan struct{} // closed when Shutdown finished
	stopErr   error
	stopBegun atomic.Bool
}

// New checks cfg, applies its defaults, resolves the name servers and
// builds the handler chain. It does not connect: Start does.
func New(cfg Config) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h, err := idemq.Chain(cfg.Handler, cfg.Middleware...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := resolveNameServers(ctx, cfg.NameServers)
	if err != nil {
		return nil, err
	}
	base, baseCancel := context.WithCancel(context.Background())
	return &Consumer{
		cfg:      cfg,
		ns:       ns,
		handler:  h,
		log:      cfg.Logger.With(slog.String("consumer_group", cfg.Group)),
		baseCtx:  base,
		cancel:   baseCancel,
		released: make(chan struct{}),
		stopped:  make(chan struct{}),
	}, nil
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

// Start creates the client, subscribes and starts consuming. It returns
// when the client has fetched its routes and sent its first heartbeat;
// messages flow once the group has rebalanced, moments later. Start is
// idempotent; after Shutdown it returns ErrClosed.
//
// Before that it asks the name servers for each subscribed topic, so that
// its error says what is wrong: no name server answers (an error wrapping
// the connection failures), or a topic does not exist (a real name server
// creates none on its own; create topics first, with package topics or
// mqadmin updateTopic). The client alone reports both as "route info not
// found".
func (c *Consumer) Start() error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.isStopping() {
		return ErrClosed
	}
	if c.started {
		return nil
	}
	begin := time.Now()
	// The client reports an unreachable name server, and a topic nobody
	// created, both as "route info not found": ask first, and say which.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range c.cfg.Subscriptions {
		ok, err := remoting.TopicExists(ctx, c.ns, s.Topic)
		if err != nil {
			return fmt.Errorf("consumer: start (group %q): %w", c.cfg.Group, err)
		}
		if !ok {
			return fmt.Errorf("consumer: start (group %q): topic %q does not exist on the name server; create it first (topics.Create, mqadmin updateTopic)", c.cfg.Group, s.Topic)
		}
	}
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
	c.log.Info("consumer started",
		slog.String("instance", c.cfg.InstanceName),
		slog.Bool("orderly", c.cfg.Orderly),
		slog.Duration("took", time.Since(begin)))
	return nil
}

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
		if cerr := c.client.Shutdown(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("consumer: shut down client: %w", cerr))
		}
	}
	close(c.released)
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
