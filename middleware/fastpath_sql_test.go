package middleware_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
)

// The Redis fast path is an option of Standard: the store is given once, a
// redelivery is answered from Redis, and the fast path's metrics are
// registered with the chain's Registerer.
func TestStandardFastPathOption(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			_, _, store := migratedStore(t, d)
			reg := prometheus.NewPedanticRegistry()
			mws, err := middleware.Standard(middleware.StandardConfig{
				Store:          store,
				FastPath:       testenv.NewRedis(t),
				FastPathConfig: redisdedup.FastPathConfig{KeyPrefix: testenv.KeyPrefix(t)},
				Registerer:     reg,
				Logger:         slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			runs := 0
			h, err := idemq.Chain(idemq.HandlerFunc(func(context.Context, *idemq.Message) error { runs++; return nil }), mws...)
			if err != nil {
				t.Fatal(err)
			}
			msg := &idemq.Message{ID: "7100000000000000001", Group: "g", Topic: "orders", Body: []byte("x"), Attempt: 1}
			for range 2 {
				if err := h.Handle(ctx, msg.Clone()); err != nil {
					t.Fatal(err)
				}
			}
			if runs != 1 {
				t.Fatalf("handler ran %d times, want 1", runs)
			}
			if got := testutil.ToFloat64(collector(t, reg, "idemq_redis_fastpath_hits_total")); got != 1 {
				t.Fatalf("fast path hits = %v, want 1 (the redelivery)", got)
			}
			// A second chain on the same registry (a second consumer group)
			// shares the metric names without an error.
			if _, err := middleware.Standard(middleware.StandardConfig{Store: store, FastPath: testenv.NewRedis(t), Registerer: reg}); err != nil {
				t.Fatalf("second chain on one registry: %v", err)
			}
		})
	}
}

// migratedStore opens d and returns it with a fresh table prefix and a
// migrated transactional store on it.
func migratedStore(t *testing.T, d testenv.DB) (*gorm.DB, string, *sqldedup.Store) {
	t.Helper()
	db := d.Open(t)
	prefix := testenv.TablePrefix(t)
	testenv.DropTables(t, db, prefix+"dedup", prefix+"attempts", prefix+"dead_letters", prefix+"schema_migrations")
	store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, prefix, store
}

// collector returns the one-metric collector that gathers name from reg.
func collector(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: "copy"}, func() float64 {
				m := mf.GetMetric()[0]
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			})
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

// TestNewFastPathOwnedByCaller builds the fast path with background marker
// writes (NewFastPath), passes it to Standard as Store without a Ledger,
// and checks that Standard finds the ledger and the retention of the store
// behind it, that the marker is written by Close, and that a redelivery
// through another fast path is then answered from Redis.
func TestNewFastPathOwnedByCaller(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db, prefix, store := migratedStore(t, d)
			rdb, kp := testenv.NewRedis(t), testenv.KeyPrefix(t)
			fc := redisdedup.FastPathConfig{KeyPrefix: kp, MarkerQueue: 8}
			fp, err := middleware.NewFastPath(middleware.StandardConfig{Store: store, FastPath: rdb, FastPathConfig: fc})
			if err != nil {
				t.Fatal(err)
			}
			defer fp.Close(ctx)
			// The retention behind a fast path is checked: 30h does not
			// outlast the default policy's horizon plus the redrive window.
			short, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix, Retention: dedup.Retention{Keep: 30 * time.Hour}})
			if err != nil {
				t.Fatal(err)
			}
			fpShort, err := middleware.NewFastPath(middleware.StandardConfig{Store: short, FastPath: rdb, FastPathConfig: redisdedup.FastPathConfig{KeyPrefix: kp}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := middleware.Standard(middleware.StandardConfig{Store: fpShort}); !errors.Is(err, dedup.ErrRetentionTooShort) {
				t.Fatalf("Standard over a fast path in front of a 30h retention: %v, want ErrRetentionTooShort", err)
			}
			runs := 0
			handler := idemq.HandlerFunc(func(context.Context, *idemq.Message) error { runs++; return nil })
			mws, err := middleware.Standard(middleware.StandardConfig{Store: fp, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("Standard over a fast path, no Ledger: %v", err)
			}
			h, err := idemq.Chain(handler, mws...)
			if err != nil {
				t.Fatal(err)
			}
			msg := &idemq.Message{ID: "7100000000000000002", Group: "g", Topic: "orders", Body: []byte("x"), Attempt: 1}
			if err := h.Handle(ctx, msg.Clone()); err != nil {
				t.Fatal(err)
			}
			if err := fp.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if st := fp.Stats(); st.MarkerWrites != 1 {
				t.Fatalf("markers written by Close: %+v, want 1", st)
			}
			fresh, err := middleware.NewFastPath(middleware.StandardConfig{Store: store, FastPath: rdb, FastPathConfig: redisdedup.FastPathConfig{KeyPrefix: kp}})
			if err != nil {
				t.Fatal(err)
			}
			res, err := fresh.Process(ctx, dedup.Request{Group: "g", Key: msg.ID}, func(context.Context) error { runs++; return nil })
			if err != nil || res.Outcome != dedup.Duplicate || !res.FastPath || runs != 1 {
				t.Fatalf("redelivery: %+v %v, handler runs %d; want a duplicate from Redis and one run", res, err, runs)
			}
		})
	}
}

// TestRedisLeaseStoreLearnsBurialsAndRedrives runs the Standard chain with
// the Redis-only lease store beside a SQL ledger: a copy of a buried
// message is skipped (the store learns the burial), and after a redrive
// the message is processed once (the store's stale dead mark does not
// swallow it).
func TestRedisLeaseStoreLearnsBurialsAndRedrives(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			_, _, ledger := migratedStore(t, d)
			lease, err := redisdedup.NewLeaseStore(testenv.NewRedis(t), redisdedup.LeaseConfig{KeyPrefix: testenv.KeyPrefix(t)})
			if err != nil {
				t.Fatal(err)
			}
			mws, err := middleware.Standard(middleware.StandardConfig{Store: lease, Ledger: ledger, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			runs, failing := 0, true
			h, err := idemq.Chain(idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
				runs++
				if failing {
					return idemq.Permanent(errors.New("the coupon does not exist"))
				}
				return nil
			}), mws...)
			if err != nil {
				t.Fatal(err)
			}
			msg := &idemq.Message{ID: "7300000000000000001", Group: "g", Topic: "coupons", Body: []byte("x"), Attempt: 1}
			deliver := func(want int) {
				t.Helper()
				if err := h.Handle(ctx, msg.Clone()); err != nil {
					t.Fatalf("delivery: %v", err)
				}
				if runs != want {
					t.Fatalf("handler ran %d times, want %d", runs, want)
				}
			}
			deliver(1) // buried: a permanent failure
			deliver(1) // a copy of the buried message is skipped
			dls, err := ledger.DeadLetters(ctx, dedup.DeadLetterFilter{Group: "g"})
			if err != nil || len(dls) != 1 {
				t.Fatalf("dead letters %v, %v; want one", dls, err)
			}
			failing = false
			var republished []*idemq.Message
			if err := ledger.Redrive(ctx, dls[0].ID, func(_ context.Context, m *idemq.Message) error {
				republished = append(republished, m)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(republished) != 1 || republished[0].ID != msg.ID {
				t.Fatalf("redrive published %v", republished)
			}
			deliver(2) // the redriven message runs
			deliver(2) // and is done
		})
	}
}
