package msgid

import (
	"github.com/idemq/idemq/internal/gate"
	"github.com/idemq/idemq/internal/tableprefix"
	"github.com/idemq/idemq/internal/token"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultNodeLeaseTTL is the default lifetime of a node lease between
// heartbeats.
const DefaultNodeLeaseTTL = 30 * time.Second

// DefaultTablePrefix is the table name prefix used when none is configured.
const DefaultTablePrefix = "idemq_"

// DefaultKeyPrefix is the Redis key prefix used when none is configured.
const DefaultKeyPrefix = "idemq:"

func validateTablePrefix(prefix string) error {
	if !tableprefix.Valid(prefix) {
		return fmt.Errorf("msgid: invalid table prefix %q: want %s", prefix, tableprefix.Pattern)
	}
	return nil
}

// NodeLeaseConfig configures a node lease.
type NodeLeaseConfig struct {
	// TablePrefix starts the lease table's name, <prefix>node_leases (SQL
	// leases only). Defaults to DefaultTablePrefix.
	TablePrefix string
	// KeyPrefix starts the lease keys, <prefix>node:<id> (Redis leases
	// only). Defaults to DefaultKeyPrefix.
	KeyPrefix string
	// Migrate brings the lease table up to date with the versioned steps
	// of the producer's tables, those of producer.Schema (SQL leases
	// only). Without it the table must exist: see producer.Schema.
	// Defaults to false.
	Migrate bool
	// TTL is how long a lease lives without a heartbeat. Heartbeats run
	// every TTL/3. The generator stops once TTL has passed since the last
	// heartbeat that succeeded. Must be at least 100ms. Defaults to
	// DefaultNodeLeaseTTL.
	TTL time.Duration
	// MinNode is the lowest node ID this lease may take. Defaults to 0.
	MinNode int64
	// NodeCount is how many node IDs, from MinNode up, this lease may
	// take; MinNode+NodeCount-1 must not exceed MaxNode. Use disjoint
	// ranges (or separate tables) for independent fleets. Defaults to
	// every node from MinNode to MaxNode.
	NodeCount int64
	// Logger receives heartbeat failures and lease loss. Defaults to
	// slog.Default().
	Logger *slog.Logger

	// clock is the wall clock reservations are counted on; it must be the
	// one the lease's Generator reads. Defaults to time.Now. Tests set
	// it to play a host whose clock is off.
	clock func() time.Time
}

func (c *NodeLeaseConfig) defaults() error {
	if c.TablePrefix == "" {
		c.TablePrefix = DefaultTablePrefix
	}
	if err := validateTablePrefix(c.TablePrefix); err != nil {
		return err
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.TTL == 0 {
		c.TTL = DefaultNodeLeaseTTL
	}
	if c.TTL < 100*time.Millisecond {
		return fmt.Errorf("msgid: node lease TTL %s is below 100ms", c.TTL)
	}
	if c.MinNode < 0 || c.MinNode > MaxNode {
		return fmt.Errorf("%w: MinNode %d", ErrInvalidNode, c.MinNode)
	}
	if c.NodeCount == 0 {
		c.NodeCount = MaxNode - c.MinNode + 1
	}
	if c.NodeCount < 0 || c.MinNode+c.NodeCount-1 > MaxNode {
		return fmt.Errorf("%w: MinNode %d with NodeCount %d", ErrInvalidNode, c.MinNode, c.NodeCount)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.clock == nil {
		c.clock = time.Now
	}
	return nil
}

// leaseBackend is the storage of a node lease.
type leaseBackend interface {
	// acquire claims a free or expired node in lo..hi and returns it with
	// its high-water mark.
	acquire(ctx context.Context, owner string, lo, hi int64) (node, lastMs int64, err error)
	// renew extends the lease and raises the node's mark to at least
	// markMs (the holder's reservation); ok is false if the lease belongs
	// to someone else now.
	renew(ctx context.Context, owner string, node, markMs int64) (ok bool, err error)
	// release frees the node and sets its mark to exactly lastMs, the
	// highest timestamp the holder issued.
	release(ctx context.Context, owner string, node, lastMs int64) error
	kind() string
}

// NodeLease is a snowflake node ID leased from a database or Redis, kept
// alive by heartbeats. It implements NodeSource.
//
// The lease is valid from Start until Shutdown, until a heartbeat finds it taken by
// another owner, or until TTL has passed since the start of the last
// heartbeat that succeeded, whichever comes first. The last rule is checked
// on every ID against the local monotonic clock, so a stalled heartbeat
// stops generation before the storage could hand the node to someone else
// (provided the storage's clock does not run faster than ours by more than
// the heartbeat margin). Once invalid, a NodeLease never becomes valid
// again.
//
// At acquisition and on every heartbeat the lease reserves, in the store,
// the timestamps up to its own wall clock plus TTL (the node's mark is
// raised to that reservation), and its generator issues no timestamp above
// the last reservation the store confirmed. A holder that dies therefore
// leaves a mark at or above every ID it issued, whatever its clock said,
// and the next holder starts above it. Shutdown sets the mark to the exact
// last timestamp issued, so that the next holder need not wait out the
// reservation.
type NodeLease struct {
	backend leaseBackend
	cfg     NodeLeaseConfig
	prepare func(context.Context) error // before the first acquisition, or nil
	gate    *gate.Gate
	running atomic.Bool // Start succeeded

	// Set by Start, before running.
	owner     string
	node      int64
	highWater int64
	ttl       time.Duration
	log       *slog.Logger
	clock     func() time.Time
	base      time.Time // monotonic reference

	issued   atomic.Int64 // highest Unix ms issued
	reserved atomic.Int64 // highest Unix ms the store confirmed as reserved
	deadline atomic.Int64 // monotonic deadline, ns since base
	lost     atomic.Bool
	lostErr  atomic.Pointer[error]
	lostCh   chan struct{}
	lostOnce sync.Once

	stop chan struct{}
	done chan struct{}
}

func newLease(b leaseBackend, cfg NodeLeaseConfig, prepare func(context.Context) error) *NodeLease {
	return &NodeLease{
		backend: b,
		cfg:     cfg,
		prepare: prepare,
		gate:    gate.New(ErrClosed, ErrNotStarted),
		lostCh:  make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Start acquires a node (first bringing the table up to date, with
// NodeLeaseConfig.Migrate), reserves timestamps for it and starts the
// heartbeats, which run until Shutdown, not until ctx is done: ctx bounds
// the acquisition only. It returns ErrNoFreeNode when every node in the
// configured range is held. Start is idempotent; after Shutdown it returns
// ErrClosed. A Start that failed may be tried again.
func (l *NodeLease) Start(ctx context.Context) error {
	return l.gate.Start(ctx, l.start)
}

func (l *NodeLease) start(ctx context.Context) error {
	cfg, b := l.cfg, l.backend
	if l.prepare != nil {
		if err := l.prepare(ctx); err != nil {
			return err
		}
	}
	owner, err := token.New()
	if err != nil {
		return fmt.Errorf("msgid: %w", err)
	}
	base := time.Now()
	reserve := cfg.clock().UnixMilli() + cfg.TTL.Milliseconds()
	node, last, err := b.acquire(ctx, owner, cfg.MinNode, cfg.MinNode+cfg.NodeCount-1)
	if err != nil {
		return err
	}
	// Reserve before the first ID: without a reservation in the store the
	// generator may issue nothing.
	ok, err := b.renew(ctx, owner, node, max(reserve, last))
	if err != nil || !ok {
		if err == nil {
			err = errLeaseGone
		}
		// Free the node as we found it: nothing was issued.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.TTL)
		_ = b.release(rctx, owner, node, last)
		cancel()
		return fmt.Errorf("msgid: reserve timestamps on node %d (%s): %w", node, b.kind(), err)
	}
	l.owner = owner
	l.node = node
	l.highWater = last
	l.ttl = cfg.TTL
	l.log = cfg.Logger.With("node_id", node, "lease", b.kind())
	l.clock = cfg.clock
	l.base = base
	l.issued.Store(last)
	l.reserved.Store(reserve)
	l.deadline.Store(int64(cfg.TTL))
	l.running.Store(true)
	go l.heartbeat()
	return nil
}

// NodeID returns the leased node ID (0 before Start).
func (l *NodeLease) NodeID() int64 { return l.node }

// HighWater returns the previous holder's highest issued timestamp (Unix
// ms), as recorded when the lease was acquired.
func (l *NodeLease) HighWater() int64 { return l.highWater }

// Reserved returns the highest timestamp (Unix ms) the store has confirmed
// as reserved by this holder: its wall clock plus TTL at the start of the
// last heartbeat that succeeded (or at acquisition).
func (l *NodeLease) Reserved() int64 { return l.reserved.Load() }

// Issued records the highest timestamp issued; Shutdown stores it for the next
// holder.
func (l *NodeLease) Issued(unixMillis int64) { raise(&l.issued, unixMillis) }

// Valid returns nil while the lease is held, and an error wrapping
// ErrNodeLeaseLost after it was lost or closed.
func (l *NodeLease) Valid() error {
	if !l.running.Load() {
		if l.lost.Load() {
			return *l.lostErr.Load()
		}
		return ErrNotStarted
	}
	if l.lost.Load() {
		return *l.lostErr.Load()
	}
	if time.Since(l.base) >= time.Duration(l.deadline.Load()) {
		l.markLost(fmt.Errorf("%w: node %d: no successful heartbeat within %s", ErrNodeLeaseLost, l.node, l.ttl))
		return *l.lostErr.Load()
	}
	return nil
}

// Lost returns a channel that is closed when the lease is lost or closed.
func (l *NodeLease) Lost() <-chan struct{} { return l.lostCh }

func (l *NodeLease) markLost(err error) {
	l.lostOnce.Do(func() {
		l.lostErr.Store(&err)
		l.lost.Store(true)
		close(l.lostCh)
	})
}

func (l *NodeLease) heartbeat() {
	defer close(l.done)
	interval := l.ttl / 3
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if l.lost.Load() {
			return
		}
		start := time.Since(l.base)
		reserve := l.clock().UnixMilli() + l.ttl.Milliseconds()
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		ok, err := l.backend.renew(ctx, l.owner, l.node, max(reserve, l.issued.Load()))
		cancel()
		switch {
		case err != nil:
			l.log.Warn("snowflake node lease heartbeat failed", "err", err)
			if l.Valid() != nil {
				l.log.Error("snowflake node lease lost: heartbeats failed past the TTL", "err", err)
				return
			}
		case !ok:
			l.markLost(fmt.Errorf("%w: node %d was taken by another owner", ErrNodeLeaseLost, l.node))
			l.log.Error("snowflake node lease lost: taken by another owner")
			return
		default:
			// Extend only forward: a late reply must not pull the
			// deadline or the reservation back.
			raise(&l.deadline, int64(start)+int64(l.ttl))
			raise(&l.reserved, reserve)
		}
	}
}

// Shutdown stops the heartbeats, records the exact highest issued
// timestamp for the next holder (in place of the reservation) and releases
// the node; generators using the lease stop generating at once. The
// release is bounded by TTL, not by ctx: Shutdown returns when it is done,
// or with ctx's error if that comes first (the release goes on). Shutdown
// is idempotent and safe to call concurrently; every call returns the
// first call's result once it is done (or its own ctx's error if that
// comes first). It may be called without Start.
func (l *NodeLease) Shutdown(ctx context.Context) error {
	return l.gate.Shutdown(ctx, l.shutdown)
}

func (l *NodeLease) shutdown() error {
	wasLost := l.lost.Load()
	l.markLost(fmt.Errorf("%w: node %d: lease shut down", ErrNodeLeaseLost, l.node))
	close(l.stop)
	<-l.done
	if wasLost {
		return nil // someone else may own the node now
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	if err := l.backend.release(ctx, l.owner, l.node, l.issued.Load()); err != nil {
		return fmt.Errorf("msgid: release node %d: %w", l.node, err)
	}
	return nil
}

// raise sets v to x if x is greater.
func raise(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

// errLeaseGone is the internal signal of an owner-checked update that
// matched nothing.
var errLeaseGone = errors.New("lease gone")
