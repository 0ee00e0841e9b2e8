package msgid

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"
)

// Snowflake layout. IDs use the default layout of github.com/bwmarrin/snowflake
// (41 bits of milliseconds since Epoch, 10 node bits, 12 sequence bits), so
// snowflake.ParseInt64(id).Time(), .Node() and .Step() decode them as long as
// the snowflake package's global settings are left at their defaults.
const (
	// Epoch is the snowflake epoch in Unix milliseconds (Nov 04 2010
	// 01:42:54.657 UTC), the default of github.com/bwmarrin/snowflake.
	Epoch int64 = 1288834974657
	// NodeBits is the number of bits that hold the node ID.
	NodeBits = 10
	// StepBits is the number of bits that hold the per-millisecond sequence.
	StepBits = 12
	// MaxNode is the highest node ID.
	MaxNode int64 = 1<<NodeBits - 1

	maxStep   int64 = 1<<StepBits - 1
	timeShift       = NodeBits + StepBits
	nodeShift       = StepBits
)

// DefaultMaxClockBackwards is how far the wall clock may step back before
// an Generator refuses to generate instead of waiting.
const DefaultMaxClockBackwards = 5 * time.Second

// Sentinel errors of the ID generator and node leases.
var (
	// ErrNodeLeaseLost is returned by an Generator whose node lease was
	// lost (taken by another process, expired without a successful
	// heartbeat, or released by Shutdown). The generator never recovers:
	// acquire a new lease and build a new generator.
	ErrNodeLeaseLost = errors.New("msgid: snowflake node lease lost")
	// ErrClockBackwards is returned when the wall clock is behind the last
	// issued timestamp (or a previous node holder's high-water mark) by
	// more than the configured MaxClockBackwards.
	ErrClockBackwards = errors.New("msgid: clock moved backwards")
	// ErrBeyondReservation is returned when the wall clock is past the
	// timestamps the node lease has reserved in its store (the clock
	// jumped forward, or heartbeats are late). The generator issues no ID
	// its store does not know of, so that the next holder of the node can
	// start above every ID issued; it issues again once a heartbeat has
	// reserved further.
	ErrBeyondReservation = errors.New("msgid: clock beyond the node lease's reservation")
	// ErrInvalidNode is returned for a node ID outside 0..MaxNode.
	ErrInvalidNode = fmt.Errorf("msgid: node ID outside 0..%d", MaxNode)
	// ErrNotStarted is returned by a NodeLease's Valid (and so by
	// NewGenerator) before its Start succeeded.
	ErrNotStarted = errors.New("msgid: node lease not started")
	// ErrClosed is returned by a NodeLease's Start after Shutdown.
	ErrClosed = errors.New("msgid: node lease shut down")
	// ErrNoFreeNode is returned when every node ID in the configured range
	// is leased by a live holder.
	ErrNoFreeNode = errors.New("msgid: no free snowflake node ID")
)

// Source issues message IDs: producer.Config.IDSource and
// outbox.Config.IDSource. *Generator implements it.
type Source interface {
	// NextID returns a new, unique message ID.
	NextID() (string, error)
}

// NodeSource supplies the node ID of an Generator and tells it whether it
// may still use it. [FixedNode] and [*NodeLease] implement it.
type NodeSource interface {
	// NodeID returns the node ID, 0..MaxNode.
	NodeID() int64
	// Valid returns nil while IDs may be generated with the node ID, and
	// an error wrapping ErrNodeLeaseLost once they may not.
	Valid() error
	// HighWater returns the highest timestamp (Unix milliseconds) a
	// previous holder of the node issued IDs with, or 0. The generator
	// issues only timestamps greater than it.
	HighWater() int64
	// Reserved returns the highest timestamp (Unix milliseconds) the
	// generator may issue: the reservation the source has recorded where
	// the next holder of the node will see it. The generator refuses a
	// later timestamp with ErrBeyondReservation. math.MaxInt64 means no
	// limit.
	Reserved() int64
	// Issued reports the highest timestamp (Unix milliseconds) issued so
	// far, so that a lease can hand it on to the next holder.
	Issued(unixMillis int64)
}

// FixedNode is a node ID taken from explicit configuration. The operator
// guarantees that no two live processes use the same one: idemq cannot
// check it. Prefer a lease ([NewSQLNodeLease], [NewRedisNodeLease]).
type FixedNode int64

// NodeID returns the node ID.
//
// A FixedNode outside 0..MaxNode is rejected by NewGenerator.
func (n FixedNode) NodeID() int64 { return int64(n) }

// Valid returns nil for a node ID in range; a fixed node is never lost.
func (n FixedNode) Valid() error {
	if n < 0 || int64(n) > MaxNode {
		return fmt.Errorf("%w (got %d)", ErrInvalidNode, int64(n))
	}
	return nil
}

// HighWater returns 0: a fixed node has no record of a previous holder.
func (FixedNode) HighWater() int64 { return 0 }

// Reserved returns math.MaxInt64: a fixed node has no store to reserve in.
func (FixedNode) Reserved() int64 { return math.MaxInt64 }

// Issued does nothing for a fixed node.
func (FixedNode) Issued(int64) {}

// GeneratorConfig configures an Generator. The zero value is usable.
type GeneratorConfig struct {
	// MaxClockBackwards is how far the wall clock may be behind the last
	// issued timestamp (or behind a lease's high-water mark) while the
	// generator waits for it to catch up. Beyond it NextID returns
	// ErrClockBackwards. Defaults to DefaultMaxClockBackwards.
	MaxClockBackwards time.Duration
	// Clock returns the wall-clock time. Defaults to time.Now.
	Clock func() time.Time
}

// Generator issues snowflake IDs for one node. It is safe for concurrent
// use.
//
// Guarantees: with a node ID no other live process uses, IDs are unique;
// within a generator they strictly increase; timestamps never go below the
// last one issued, and after a lease hand-over they are strictly above the
// previous holder's high-water mark. It never issues a timestamp above the
// reservation its NodeSource recorded (ErrBeyondReservation), which is what
// lets the next holder start above every ID issued whatever this host's
// clock said. The generator reads the wall clock on every ID (it does not
// use bwmarrin/snowflake's Node, whose monotonic epoch is fixed at start and
// cannot be compared with another process's timestamps), waits out a
// backward step of up to MaxClockBackwards, and fails beyond it. It refuses
// to generate once its NodeSource is invalid.
type Generator struct {
	src      NodeSource
	node     int64
	maxBack  time.Duration
	clock    func() time.Time
	sleep    func(time.Duration)
	mu       sync.Mutex
	lastMs   int64 // Unix ms of the last ID issued (or the high-water mark)
	lastStep int64
}

// NewGenerator returns a generator for the node that src supplies.
func NewGenerator(src NodeSource, cfg GeneratorConfig) (*Generator, error) {
	if src == nil {
		return nil, errors.New("msgid: nil NodeSource")
	}
	if err := src.Valid(); err != nil {
		return nil, err
	}
	node := src.NodeID()
	if node < 0 || node > MaxNode {
		return nil, fmt.Errorf("%w (got %d)", ErrInvalidNode, node)
	}
	if cfg.MaxClockBackwards < 0 {
		return nil, fmt.Errorf("msgid: negative MaxClockBackwards %s", cfg.MaxClockBackwards)
	}
	if cfg.MaxClockBackwards == 0 {
		cfg.MaxClockBackwards = DefaultMaxClockBackwards
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Generator{
		src:     src,
		node:    node,
		maxBack: cfg.MaxClockBackwards,
		clock:   cfg.Clock,
		sleep:   time.Sleep,
		// Start as if the high-water millisecond were used up, so the
		// first ID has a strictly greater timestamp.
		lastMs:   src.HighWater(),
		lastStep: maxStep,
	}, nil
}

// NodeID returns the generator's node ID.
func (g *Generator) NodeID() int64 { return g.node }

// NextID returns a new ID as a decimal string.
func (g *Generator) NextID() (string, error) {
	id, err := g.Next()
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(id, 10), nil
}

// Next returns a new ID.
func (g *Generator) Next() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.src.Valid(); err != nil {
		return 0, err
	}
	now, err := g.notBefore(g.lastMs)
	if err != nil {
		return 0, err
	}
	step := int64(0)
	if now == g.lastMs {
		step = g.lastStep + 1
		if step > maxStep {
			// The millisecond is used up: wait for the next one.
			if now, err = g.notBefore(g.lastMs + 1); err != nil {
				return 0, err
			}
			step = 0
		}
	}
	if now-Epoch >= 1<<(63-timeShift) {
		return 0, fmt.Errorf("msgid: clock %d ms is beyond the snowflake range", now)
	}
	if r := g.src.Reserved(); now > r {
		return 0, fmt.Errorf("%w: clock %d ms, reserved up to %d ms", ErrBeyondReservation, now, r)
	}
	// Record the timestamp before the final validity check: a lease that
	// is closed concurrently either sees it (and hands it on) or we see
	// the close (and return no ID).
	g.src.Issued(now)
	if err := g.src.Valid(); err != nil {
		return 0, err
	}
	g.lastMs, g.lastStep = now, step
	return (now-Epoch)<<timeShift | g.node<<nodeShift | step, nil
}

// notBefore reads the clock until it shows at least min (Unix ms), waiting
// out a backward gap of up to maxBack.
func (g *Generator) notBefore(min int64) (int64, error) {
	now := g.clock().UnixMilli()
	if now < Epoch {
		return 0, fmt.Errorf("msgid: clock %d ms is before the snowflake epoch", now)
	}
	if now >= min {
		return now, nil
	}
	// Wait in total no longer than maxBack plus a little: a clock that
	// does not advance must not hang the caller.
	var waited time.Duration
	for now < min {
		gap := time.Duration(min-now) * time.Millisecond
		if gap > g.maxBack || waited > g.maxBack+time.Second {
			return 0, fmt.Errorf("%w: %s behind the last issued timestamp (limit %s)", ErrClockBackwards, gap, g.maxBack)
		}
		g.sleep(gap)
		waited += gap
		now = g.clock().UnixMilli()
	}
	return now, nil
}

// Parse decodes an ID made by an Generator into its timestamp, node and
// sequence.
func Parse(id string) (at time.Time, node int64, step int64, err error) {
	v, err := strconv.ParseInt(id, 10, 64)
	if err != nil || v < 0 {
		return time.Time{}, 0, 0, fmt.Errorf("msgid: %q is not a snowflake ID", id)
	}
	return time.UnixMilli(v>>timeShift + Epoch), v >> nodeShift & MaxNode, v & maxStep, nil
}
