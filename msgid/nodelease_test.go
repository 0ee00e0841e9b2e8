package msgid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/sqlscript"
	"github.com/idemq/idemq/internal/testenv"
)

var quietLog = slog.New(slog.DiscardHandler)

// crash simulates a process that dies while holding the lease: heartbeats
// stop and nothing is released.
func (l *NodeLease) crash() {
	_ = l.gate.Shutdown(context.Background(), func() error {
		l.markLost(fmt.Errorf("%w: crashed", ErrNodeLeaseLost))
		close(l.stop)
		<-l.done
		return nil
	})
}

// die simulates a process whose heartbeats stop (it hangs, or its host is
// cut off) while it keeps generating: nothing is released, and the lease
// is lost only when its local deadline passes.
func (l *NodeLease) die() {
	_ = l.gate.Shutdown(context.Background(), func() error {
		close(l.stop)
		<-l.done
		return nil
	})
}

// started returns a func that starts the lease New returned, or passes
// on New's error: started(ctx)(NewSQLNodeLease(db, cfg)).
func started(ctx context.Context) func(*NodeLease, error) (*NodeLease, error) {
	return func(l *NodeLease, err error) (*NodeLease, error) {
		if err != nil {
			return nil, err
		}
		if err := l.Start(ctx); err != nil {
			return nil, err
		}
		return l, nil
	}
}

// leaseEnv gives a test leases backed by one store. Every call of acquire
// uses its own connection, as a separate process would.
type leaseEnv struct {
	// acquire leases a node with cfg (prefix filled in).
	acquire func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error)
	// process opens a connection now and returns an acquire that uses
	// it, safe to call from any goroutine.
	process func() func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error)
	// acquireBreakable is acquire, plus a func that cuts the lease's
	// connection for good.
	acquireBreakable func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, func(), error)
	// steal overwrites the node's owner, as if another process had it.
	steal func(t *testing.T, node int64)
	// mark reads the stored high-water mark of a node.
	mark func(t *testing.T, node int64) int64
}

type leaseKind struct {
	name  string
	setup func(t *testing.T) leaseEnv
}

func leaseKinds() []leaseKind {
	var kinds []leaseKind
	for _, k := range databases() {
		kinds = append(kinds, leaseKind{name: k.name, setup: func(t *testing.T) leaseEnv { return sqlLeaseEnv(t, k) }})
	}
	kinds = append(kinds, leaseKind{name: "redis", setup: redisLeaseEnv})
	return kinds
}

func sqlLeaseEnv(t *testing.T, k dbKind) leaseEnv {
	admin := k.open(t)
	prefix := tablePrefix(t, admin)
	// Create the table once, from the shipped SQL: the leases below do not
	// migrate, so this also proves the shipped schema is what they need.
	schema, err := migrate.Schema("producer", k.name, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sqlscript.Split(schema) {
		if err := admin.Exec(s).Error; err != nil {
			t.Fatalf("schema %q: %v", s, err)
		}
	}
	table := prefix + "node_leases"
	acquireOn := func(ctx context.Context, db *gorm.DB, cfg NodeLeaseConfig) (*NodeLease, error) {
		cfg.TablePrefix = prefix
		cfg.Logger = quietLog
		return started(ctx)(NewSQLNodeLease(db, cfg))
	}
	return leaseEnv{
		acquire: func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error) {
			return acquireOn(ctx, k.open(t), cfg)
		},
		process: func() func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error) {
			db := k.open(t)
			return func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error) { return acquireOn(ctx, db, cfg) }
		},
		acquireBreakable: func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, func(), error) {
			if k.via == nil {
				// SQLite has no network to cut: close the pool.
				db := k.open(t)
				l, err := acquireOn(ctx, db, cfg)
				if err != nil {
					return nil, nil, err
				}
				sqlDB, _ := db.DB()
				return l, func() { _ = sqlDB.Close() }, nil
			}
			proxy := testenv.NewProxy(t, k.addr(t))
			l, err := acquireOn(ctx, k.via(t, proxy.Addr()), cfg)
			if err != nil {
				return nil, nil, err
			}
			return l, proxy.Cut, nil
		},
		steal: func(t *testing.T, node int64) {
			res := admin.Exec("UPDATE "+table+" SET owner = 'thief' WHERE node_id = ?", node)
			if res.Error != nil || res.RowsAffected != 1 {
				t.Fatalf("steal node %d: %v (%d rows)", node, res.Error, res.RowsAffected)
			}
		},
		mark: func(t *testing.T, node int64) int64 {
			var v []int64
			if err := admin.Raw("SELECT last_ms FROM "+table+" WHERE node_id = ?", node).Scan(&v).Error; err != nil || len(v) != 1 {
				t.Fatalf("read mark of node %d: %v %v", node, v, err)
			}
			return v[0]
		},
	}
}

func redisLeaseEnv(t *testing.T) leaseEnv {
	admin := newRedis(t)
	prefix := keyPrefix(t)
	acquireOn := func(ctx context.Context, c redis.UniversalClient, cfg NodeLeaseConfig) (*NodeLease, error) {
		cfg.KeyPrefix = prefix
		cfg.Logger = quietLog
		return started(ctx)(NewRedisNodeLease(c, cfg))
	}
	return leaseEnv{
		acquire: func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error) {
			return acquireOn(ctx, newRedis(t), cfg)
		},
		process: func() func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error) {
			c := newRedis(t)
			return func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, error) { return acquireOn(ctx, c, cfg) }
		},
		acquireBreakable: func(ctx context.Context, cfg NodeLeaseConfig) (*NodeLease, func(), error) {
			proxy := testenv.NewProxy(t, testenv.RedisAddr(t))
			l, err := acquireOn(ctx, testenv.NewRedisAt(t, proxy.Addr()), cfg)
			if err != nil {
				return nil, nil, err
			}
			return l, proxy.Cut, nil
		},
		steal: func(t *testing.T, node int64) {
			key := prefix + "node:" + strconv.FormatInt(node, 10)
			if err := admin.Set(context.Background(), key, "thief", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		},
		mark: func(t *testing.T, node int64) int64 {
			v, err := admin.Get(context.Background(), prefix+"node:"+strconv.FormatInt(node, 10)+":last").Int64()
			if err != nil {
				t.Fatal(err)
			}
			return v
		},
	}
}

func forEachLeaseKind(t *testing.T, f func(t *testing.T, env leaseEnv)) {
	for _, k := range leaseKinds() {
		t.Run(k.name, func(t *testing.T) { f(t, k.setup(t)) })
	}
}

func closeLease(t *testing.T, l *NodeLease) {
	t.Cleanup(func() { _ = l.Shutdown(context.Background()) })
}

// waitLost polls until the generator refuses, or fails the test after
// limit. The limit is generous; it is not a timing assertion.
func waitLost(t *testing.T, g *Generator, limit time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := g.NextID(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("generator still issuing IDs after %s", limit)
	return nil
}

// Sixteen processes race for four nodes: exactly four win, each a different
// node; the rest get ErrNoFreeNode.
func TestNodeLeaseRace(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		const racers, nodes = 16, 4
		ctx := context.Background()
		var (
			mu     sync.Mutex
			leases []*NodeLease
			errs   []error
			wg     sync.WaitGroup
			start  = make(chan struct{})
		)
		for i := 0; i < racers; i++ {
			acquire := env.process()
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, err := acquire(ctx, NodeLeaseConfig{MinNode: 100, NodeCount: nodes, TTL: 10 * time.Second})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				leases = append(leases, l)
			}()
		}
		close(start)
		wg.Wait()
		for _, l := range leases {
			closeLease(t, l)
		}
		for _, err := range errs {
			if !errors.Is(err, ErrNoFreeNode) {
				t.Errorf("losing racer: %v, want ErrNoFreeNode", err)
			}
		}
		if len(leases) != nodes {
			t.Fatalf("%d leases granted, want %d", len(leases), nodes)
		}
		got := map[int64]bool{}
		for _, l := range leases {
			if got[l.NodeID()] {
				t.Fatalf("node %d granted twice", l.NodeID())
			}
			if l.NodeID() < 100 || l.NodeID() >= 100+nodes {
				t.Fatalf("node %d outside 100..%d", l.NodeID(), 100+nodes-1)
			}
			got[l.NodeID()] = true
		}
	})
}

// 1e5 IDs from four generators on four leased nodes are all unique.
func TestNodeLeaseUniqueIDs(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		const gens, each = 4, 25_000
		ctx := context.Background()
		var all []int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 0; i < gens; i++ {
			l, err := env.acquire(ctx, NodeLeaseConfig{MinNode: 0, NodeCount: gens, TTL: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			closeLease(t, l)
			g, err := NewGenerator(l, GeneratorConfig{})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids := make([]int64, 0, each)
				for j := 0; j < each; j++ {
					id, err := g.Next()
					if err != nil {
						t.Error(err)
						return
					}
					ids = append(ids, id)
				}
				mu.Lock()
				all = append(all, ids...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if len(all) != gens*each {
			t.Fatalf("got %d IDs, want %d", len(all), gens*each)
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		for i := 1; i < len(all); i++ {
			if all[i] == all[i-1] {
				t.Fatalf("duplicate ID %d", all[i])
			}
		}
	})
}

// A lease taken by someone else stops the generator at the next heartbeat.
// The TTLs in these tests leave a loaded 2-core machine room for a
// heartbeat round trip; a shorter one loses the lease to a slow heartbeat
// first, which is safe but not what the test is about.
func TestNodeLeaseLostWhenTaken(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		l, err := env.acquire(context.Background(), NodeLeaseConfig{MinNode: 5, NodeCount: 1, TTL: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		closeLease(t, l)
		g, err := NewGenerator(l, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.NextID(); err != nil {
			t.Fatal(err)
		}
		env.steal(t, 5)
		err = waitLost(t, g, 10*time.Second)
		if !errors.Is(err, ErrNodeLeaseLost) || !strings.Contains(err.Error(), "taken") {
			t.Fatalf("err = %v, want ErrNodeLeaseLost (taken)", err)
		}
		select {
		case <-l.Lost():
		default:
			t.Error("Lost() not closed")
		}
		if _, err := g.NextID(); !errors.Is(err, ErrNodeLeaseLost) {
			t.Errorf("generator recovered: %v", err)
		}
	})
}

// Heartbeats that keep failing past the TTL stop the generator.
func TestNodeLeaseLostWhenHeartbeatsFail(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		l, cut, err := env.acquireBreakable(context.Background(), NodeLeaseConfig{MinNode: 6, NodeCount: 1, TTL: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		closeLease(t, l)
		g, err := NewGenerator(l, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.NextID(); err != nil {
			t.Fatal(err)
		}
		cut()
		err = waitLost(t, g, 10*time.Second)
		if !errors.Is(err, ErrNodeLeaseLost) || !strings.Contains(err.Error(), "heartbeat") {
			t.Fatalf("err = %v, want ErrNodeLeaseLost (heartbeat)", err)
		}
	})
}

// The lease of a crashed holder expires and is taken over; the new
// holder's IDs are above everything the crashed one issued.
func TestNodeLeaseExpiredIsReacquired(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		ctx := context.Background()
		cfg := NodeLeaseConfig{MinNode: 7, NodeCount: 1, TTL: 1500 * time.Millisecond}
		a, err := env.acquire(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ga, err := NewGenerator(a, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var lastA int64
		for i := 0; i < 100; i++ {
			if lastA, err = ga.Next(); err != nil {
				t.Fatal(err)
			}
		}
		a.crash()

		if _, err := env.acquire(ctx, cfg); !errors.Is(err, ErrNoFreeNode) {
			t.Fatalf("second holder while the lease is live: err = %v, want ErrNoFreeNode", err)
		}
		var b *NodeLease
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err = env.acquire(ctx, cfg)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrNoFreeNode) || time.Now().After(deadline) {
				t.Fatalf("re-acquire: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		closeLease(t, b)
		if b.NodeID() != 7 {
			t.Fatalf("node %d, want 7", b.NodeID())
		}
		atA, _, _, _ := Parse(strconv.FormatInt(lastA, 10))
		if b.HighWater() < atA.UnixMilli() {
			t.Errorf("high water %d below the crashed holder's last timestamp %d", b.HighWater(), atA.UnixMilli())
		}
		gb, err := NewGenerator(b, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		first, err := gb.Next()
		if err != nil {
			t.Fatal(err)
		}
		if first <= lastA {
			t.Errorf("new holder's first ID %d not above the crashed holder's last %d", first, lastA)
		}
	})
}

// A holder whose clock runs 1.5 s ahead of everyone else's stops
// heartbeating and keeps issuing IDs for as long as its generator lets it.
// Its successor, on an honest clock, takes the node over after expiry: its
// first ID is above every ID the holder issued, because the holder never
// issued a timestamp above the reservation it had recorded in the store.
func TestNodeLeaseSuccessorAboveHolderAhead(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		ctx := context.Background()
		const node = 9
		ahead := func() time.Time { return time.Now().Add(1500 * time.Millisecond) }
		cfg := NodeLeaseConfig{MinNode: node, NodeCount: 1, TTL: 600 * time.Millisecond}
		holderCfg := cfg
		holderCfg.clock = ahead
		a, err := env.acquire(ctx, holderCfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.crash)
		ga, err := NewGenerator(a, GeneratorConfig{Clock: ahead})
		if err != nil {
			t.Fatal(err)
		}
		var maxA int64
		for i := 0; i < 100; i++ {
			if maxA, err = ga.Next(); err != nil {
				t.Fatal(err)
			}
		}
		// Heartbeats stop; the holder issues IDs until its generator
		// refuses (lease deadline passed, or beyond the reservation).
		a.die()
		var stopErr error
		for {
			id, err := ga.Next()
			if err != nil {
				stopErr = err
				break
			}
			maxA = id
		}
		if !errors.Is(stopErr, ErrNodeLeaseLost) && !errors.Is(stopErr, ErrBeyondReservation) {
			t.Fatalf("holder stopped with %v, want ErrNodeLeaseLost or ErrBeyondReservation", stopErr)
		}
		atA, _, _, _ := Parse(strconv.FormatInt(maxA, 10))
		if m := env.mark(t, node); m < atA.UnixMilli() {
			t.Errorf("stored mark %d below the holder's last timestamp %d", m, atA.UnixMilli())
		}

		var b *NodeLease
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err = env.acquire(ctx, cfg)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrNoFreeNode) || time.Now().After(deadline) {
				t.Fatalf("take over: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		closeLease(t, b)
		gb, err := NewGenerator(b, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		first, err := gb.Next()
		if err != nil {
			t.Fatal(err)
		}
		if first <= maxA {
			atB, _, _, _ := Parse(strconv.FormatInt(first, 10))
			t.Fatalf("successor's first ID %d (at %d ms) not above the holder's last %d (at %d ms)",
				first, atB.UnixMilli(), maxA, atA.UnixMilli())
		}
	})
}

// A generator whose clock is past what its lease reserved in the store
// refuses to issue, and the store's mark stays above everything it did
// issue.
func TestNodeLeaseRefusesBeyondReservation(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		const node = 10
		ttl := 2 * time.Second
		l, err := env.acquire(context.Background(), NodeLeaseConfig{MinNode: node, NodeCount: 1, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		closeLease(t, l)
		g, err := NewGenerator(l, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		id, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		at, _, _, _ := Parse(strconv.FormatInt(id, 10))
		// Local first: the store's mark is raised before the lease counts
		// a reservation as confirmed, and a heartbeat may run in between.
		r := l.Reserved()
		if r < at.UnixMilli() || r > time.Now().Add(ttl).UnixMilli() {
			t.Fatalf("reserved %d, want between the ID's %d and now+TTL", r, at.UnixMilli())
		}
		if m := env.mark(t, node); m < r {
			t.Fatalf("stored mark %d below the confirmed reservation %d", m, r)
		}
		// The generator's clock jumps past the reservation (here: a clock
		// other than the lease's; in life: a forward step).
		jumped, err := NewGenerator(l, GeneratorConfig{Clock: func() time.Time { return time.Now().Add(2 * ttl) }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jumped.Next(); !errors.Is(err, ErrBeyondReservation) {
			t.Fatalf("err = %v, want ErrBeyondReservation", err)
		}
		if _, err := g.Next(); err != nil {
			t.Fatalf("the honest generator stopped: %v", err)
		}
	})
}

// Close records the exact high-water mark; the next holder starts after it
// even when the previous holder's clock ran ahead.
func TestNodeLeaseShutdownHandsOverHighWater(t *testing.T) {
	forEachLeaseKind(t, func(t *testing.T, env leaseEnv) {
		ctx := context.Background()
		cfg := NodeLeaseConfig{MinNode: 8, NodeCount: 1, TTL: 5 * time.Second}
		a, err := env.acquire(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ahead := func() time.Time { return time.Now().Add(400 * time.Millisecond) }
		ga, err := NewGenerator(a, GeneratorConfig{Clock: ahead})
		if err != nil {
			t.Fatal(err)
		}
		var lastA int64
		for i := 0; i < 10; i++ {
			if lastA, err = ga.Next(); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := ga.Next(); !errors.Is(err, ErrNodeLeaseLost) {
			t.Fatalf("after Close: err = %v, want ErrNodeLeaseLost", err)
		}
		atA, _, _, _ := Parse(strconv.FormatInt(lastA, 10))
		if m := env.mark(t, 8); m != atA.UnixMilli() {
			t.Errorf("stored mark %d, want the last issued %d", m, atA.UnixMilli())
		}

		b, err := env.acquire(ctx, cfg)
		if err != nil {
			t.Fatalf("node not free after Close: %v", err)
		}
		closeLease(t, b)
		if b.NodeID() != 8 || b.HighWater() != atA.UnixMilli() {
			t.Fatalf("node %d high water %d, want 8 and %d", b.NodeID(), b.HighWater(), atA.UnixMilli())
		}
		gb, err := NewGenerator(b, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		first, err := gb.Next()
		if err != nil {
			t.Fatal(err)
		}
		if first <= lastA {
			t.Errorf("first ID %d not above the previous holder's last %d", first, lastA)
		}
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestNodeLeaseConfigValidation(t *testing.T) {
	db := databases()[0].open(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  NodeLeaseConfig
		want string
	}{
		{"uppercase prefix", NodeLeaseConfig{TablePrefix: "Idemq_"}, "invalid table prefix"},
		{"prefix with dash", NodeLeaseConfig{TablePrefix: "a-b"}, "invalid table prefix"},
		{"prefix with quote", NodeLeaseConfig{TablePrefix: "a'; drop"}, "invalid table prefix"},
		{"prefix too long", NodeLeaseConfig{TablePrefix: "a" + strings.Repeat("b", 31)}, "invalid table prefix"},
		{"tiny TTL", NodeLeaseConfig{TTL: time.Millisecond}, "below 100ms"},
		{"negative node", NodeLeaseConfig{MinNode: -1}, "node ID outside"},
		{"range past max", NodeLeaseConfig{MinNode: 1000, NodeCount: 30}, "node ID outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSQLNodeLease(db, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := NewSQLNodeLease(nil, NodeLeaseConfig{}); err == nil {
		t.Error("nil db accepted")
	}
	if _, err := NewRedisNodeLease(nil, NodeLeaseConfig{}); err == nil {
		t.Error("nil redis client accepted")
	}
	// Without Migrate, a missing table is a clear error.
	_, err := started(ctx)(NewSQLNodeLease(db, NodeLeaseConfig{TablePrefix: "nosuch_"}))
	if err == nil || !strings.Contains(err.Error(), "nosuch_node_leases") {
		t.Errorf("missing table: err = %v", err)
	}
}

// Migrate creates the table with the versioned steps, and leasing works on it.
func TestNodeLeaseMigrate(t *testing.T) {
	ctx := context.Background()
	for _, k := range databases() {
		t.Run(k.name, func(t *testing.T) {
			db := k.open(t)
			prefix := tablePrefix(t, db)
			l, err := started(ctx)(NewSQLNodeLease(db, NodeLeaseConfig{TablePrefix: prefix, Migrate: true, NodeCount: 2}))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Shutdown(ctx)
			if !db.Migrator().HasTable(prefix + "node_leases") {
				t.Fatal("table not created")
			}
			l2, err := started(ctx)(NewSQLNodeLease(db, NodeLeaseConfig{TablePrefix: prefix, Migrate: true, NodeCount: 2}))
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Shutdown(ctx)
			if l.NodeID() == l2.NodeID() {
				t.Fatalf("both leases got node %d", l.NodeID())
			}
		})
	}
}

// A lease has the lifecycle of every long-lived idemq value: New checks
// and touches nothing, Start acquires (idempotent), Shutdown releases
// (idempotent), Start after Shutdown is ErrClosed.
func TestNodeLeaseLifecycle(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		db := databases()[0].open(t)
		prefix := tablePrefix(t, db)
		// New touches nothing: the missing table shows up at Start.
		l, err := NewSQLNodeLease(db, NodeLeaseConfig{TablePrefix: prefix, Logger: quietLog, NodeCount: 1})
		if err != nil {
			t.Fatalf("New without a table: %v", err)
		}
		if err := l.Valid(); !errors.Is(err, ErrNotStarted) {
			t.Fatalf("Valid before Start = %v, want ErrNotStarted", err)
		}
		if _, err := NewGenerator(l, GeneratorConfig{}); !errors.Is(err, ErrNotStarted) {
			t.Fatalf("NewGenerator before Start = %v, want ErrNotStarted", err)
		}
		if err := l.Start(ctx); err == nil || !strings.Contains(err.Error(), prefix+"node_leases") {
			t.Fatalf("Start without a table = %v, want an error naming the table", err)
		}
		// A failed Start may be tried again once the table exists.
		if err := migrateTables(ctx, db, prefix); err != nil {
			t.Fatal(err)
		}
		if err := l.Start(ctx); err != nil {
			t.Fatal(err)
		}
		node := l.NodeID()
		if err := l.Start(ctx); err != nil || l.NodeID() != node {
			t.Fatalf("second Start = %v, node %d (want nil, %d)", err, l.NodeID(), node)
		}
		g, err := NewGenerator(l, GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.NextID(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := l.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		}
		if _, err := g.NextID(); !errors.Is(err, ErrNodeLeaseLost) {
			t.Fatalf("NextID after Shutdown = %v, want ErrNodeLeaseLost", err)
		}
		if err := l.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after Shutdown = %v, want ErrClosed", err)
		}
		// The node was released: the only node of the range is free.
		l2, err := started(ctx)(NewSQLNodeLease(db, NodeLeaseConfig{TablePrefix: prefix, Logger: quietLog, NodeCount: 1}))
		if err != nil {
			t.Fatalf("node not released by Shutdown: %v", err)
		}
		_ = l2.Shutdown(ctx)
	})
}
