package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/gate"
	"github.com/idemq/idemq/internal/nameserver"
	"github.com/idemq/idemq/internal/remoting"
	"github.com/idemq/idemq/msgid"
)

// Defaults of Config.
const (
	DefaultRetries          = 2
	DefaultSendTimeout      = 10 * time.Second
	DefaultAttemptTimeout   = 3 * time.Second
	DefaultAsyncConcurrency = 64
	DefaultGroup            = "idemq_producer"
)

// Errors of the producer.
var (
	// ErrClosed is returned by sends, and by Start, after Shutdown.
	ErrClosed = errors.New("producer: shut down")
	// ErrNotStarted is returned by sends before Start succeeded.
	ErrNotStarted = errors.New("producer: not started; call Start first")
	// ErrSendNotOK is returned when the broker answered a send with a
	// status other than SEND_OK (flush or slave timeouts). The message may
	// well be stored: re-sending it is safe, because it keeps its ID and
	// consumers deduplicate by it.
	ErrSendNotOK = errors.New("producer: broker did not confirm the send")
	// ErrInvalidMessage is returned (wrapped in idemq.Permanent) for a
	// message that can never be sent as it is: no topic, an empty or
	// reserved property name, separators inside names, values or keys.
	ErrInvalidMessage = errors.New("producer: invalid message")
)

// Config configures a Producer.
type Config struct {
	// NameServers are the RocketMQ name servers as host:port. Host names
	// are resolved to IP addresses by Start (rocketmq-client-go accepts
	// only IP:port). Required.
	NameServers []string
	// Group is the producer group. Defaults to DefaultGroup.
	Group string
	// InstanceName names the client instance. rocketmq-client-go shares one
	// internal client (connections, routes, callbacks) among all
	// producers and consumers of a process with the same instance name,
	// which breaks when they use different name servers or are
	// transaction producers. Defaults to a name unique to this Producer.
	InstanceName string
	// Retries is how many times the client re-sends after a failed attempt
	// (to another broker when there is one). -1 disables retries.
	// Defaults to DefaultRetries.
	Retries int
	// SendTimeout bounds one send call, all attempts included (it is the
	// deadline of the context the client gets). Defaults to
	// DefaultSendTimeout.
	SendTimeout time.Duration
	// AttemptTimeout bounds each attempt of a send: an attempt the broker
	// does not answer in time is abandoned and the next one starts, while
	// SendTimeout is left. It is the client's WithSendMsgTimeout, which
	// rocketmq-client-go applies per attempt. A value above SendTimeout is
	// lowered to it. Defaults to DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// IDSource issues the message IDs. Required: use a *msgid.Generator
	// on a leased or explicitly configured node.
	IDSource msgid.Source
	// AsyncConcurrency bounds the sends SendAsync runs at once; further
	// calls wait for a slot. Defaults to DefaultAsyncConcurrency.
	AsyncConcurrency int
	// Logger receives the producer's own logs. Defaults to slog.Default().
	// See SetClientLogger for the client library's logs.
	Logger *slog.Logger
}

var instanceSeq atomic.Int64

func uniqueInstanceName(kind string) string {
	return fmt.Sprintf("idemq-%s-%d-%d-%d", kind, os.Getpid(), time.Now().UnixNano(), instanceSeq.Add(1))
}

func (c *Config) defaults(kind string) error {
	if len(c.NameServers) == 0 {
		return errors.New("producer: Config.NameServers is empty")
	}
	for _, a := range c.NameServers {
		if _, _, err := nameserver.Check(a); err != nil {
			return fmt.Errorf("producer: %w", err)
		}
	}
	if c.IDSource == nil {
		return errors.New("producer: Config.IDSource is required (a *msgid.Generator on a leased or configured node)")
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.InstanceName == "" {
		c.InstanceName = uniqueInstanceName(kind)
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries == -1:
		c.Retries = 0
	case c.Retries < -1:
		return fmt.Errorf("producer: Retries %d (want -1 for none, or a positive count)", c.Retries)
	}
	if c.SendTimeout < 0 {
		return fmt.Errorf("producer: negative SendTimeout %s", c.SendTimeout)
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.AttemptTimeout < 0 {
		return fmt.Errorf("producer: negative AttemptTimeout %s", c.AttemptTimeout)
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	c.AttemptTimeout = min(c.AttemptTimeout, c.SendTimeout)
	if c.AsyncConcurrency < 0 {
		return fmt.Errorf("producer: negative AsyncConcurrency %d", c.AsyncConcurrency)
	}
	if c.AsyncConcurrency == 0 {
		c.AsyncConcurrency = DefaultAsyncConcurrency
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func clientOptions(cfg *Config, ns primitive.NamesrvAddr, selector rmqproducer.QueueSelector) []rmqproducer.Option {
	return []rmqproducer.Option{
		rmqproducer.WithNameServer(ns),
		rmqproducer.WithGroupName(cfg.Group),
		rmqproducer.WithInstanceName(cfg.InstanceName),
		rmqproducer.WithRetry(cfg.Retries),
		// Per attempt: the total budget is the context's deadline
		// (SendTimeout), set on every call.
		rmqproducer.WithSendMsgTimeout(cfg.AttemptTimeout),
		rmqproducer.WithQueueSelector(selector),
	}
}

// Producer sends idemq messages to RocketMQ. Every send stamps the message
// first (see Stamp), so its ID is fixed before the first attempt and is the
// same on every re-send of that *idemq.Message. It is safe for concurrent
// use.
//
// New builds a Producer and checks its configuration; Start connects it;
// Shutdown stops it. Sends before Start return ErrNotStarted, and after
// Shutdown ErrClosed.
type Producer struct {
	cfg    Config
	client rocketmq.Producer // set by Start
	log    *slog.Logger

	gate  *gate.Gate    // Start, sends in flight, and Shutdown
	async chan struct{} // SendAsync slots
}

// New returns a Producer for cfg, with defaults applied. It checks cfg and
// touches no network: Start connects.
func New(cfg Config) (*Producer, error) {
	if err := cfg.defaults("producer"); err != nil {
		return nil, err
	}
	return &Producer{
		cfg:   cfg,
		log:   cfg.Logger.With("producer_group", cfg.Group),
		gate:  gate.New(ErrClosed, ErrNotStarted),
		async: make(chan struct{}, cfg.AsyncConcurrency),
	}, nil
}

// Start resolves the name servers, checks that one answers and starts the
// client. It returns an error that says "no name server answers" (wrapping
// each connection failure) when none does: the client alone would start
// and report it only at the first send, as "route info not found". ctx
// bounds the checks, not the Producer's life. Start is idempotent; after
// Shutdown it returns ErrClosed. A Start that failed may be tried again.
func (p *Producer) Start(ctx context.Context) error {
	return p.gate.Start(ctx, func(ctx context.Context) error {
		ns, err := p.cfg.connect(ctx)
		if err != nil {
			return err
		}
		client, err := rocketmq.NewProducer(clientOptions(&p.cfg, ns, newShardingSelector())...)
		if err != nil {
			return fmt.Errorf("producer: new client: %w", err)
		}
		if err := client.Start(); err != nil {
			_ = client.Shutdown()
			return fmt.Errorf("producer: start client (group %q, instance %q): %w", p.cfg.Group, p.cfg.InstanceName, err)
		}
		p.cfg.NameServers = ns // resolved, for the checks after a failed send
		p.client = client
		return nil
	})
}

// Shutdown stops accepting sends, waits for the sends in flight (SendAsync
// callbacks included) and stops the client. Further sends and Start return
// ErrClosed. Shutdown is idempotent and safe to call concurrently; every
// call returns the first call's result once it is done (or its own ctx's
// error if that comes first). It may be called without Start.
func (p *Producer) Shutdown(ctx context.Context) error {
	return p.gate.Shutdown(ctx, func() error {
		if err := p.client.Shutdown(); err != nil {
			return fmt.Errorf("producer: shutdown client: %w", err)
		}
		return nil
	})
}

// begin registers a send in flight; end must follow.
func (p *Producer) begin() error { return p.gate.Enter() }

func (p *Producer) end() { p.gate.Leave() }

// Stamp gives msg its idemq message ID if it has none, from the Producer's
// ID source: msg.ID, the property idemq.PropertyMessageID and an entry in
// msg.Keys (added once). A message stamped earlier keeps its ID; a message
// whose ID is empty but whose PropertyMessageID property is set (a
// redriven dead letter, say) takes the ID from the property; an ID that
// differs from that property is refused. Every send calls Stamp first.
//
// Stamp writes to msg, so one message must not be stamped or sent from two
// goroutines at once.
func (p *Producer) Stamp(msg *idemq.Message) error {
	return stamp(p.cfg.IDSource, msg)
}

// connect resolves the name servers (host:port to IP:port, as the client
// demands) and checks that one of them answers.
func (c *Config) connect(ctx context.Context) (primitive.NamesrvAddr, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	ns, err := nameserver.Resolve(ctx, c.NameServers)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	// Any topic will do: the answer only shows that a name server is up.
	if _, err := remoting.TopicExists(ctx, ns, c.Group); err != nil {
		return nil, fmt.Errorf("producer: start (group %q): %w", c.Group, err)
	}
	return ns, nil
}
