package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
)

// deadLetterCount counts the dead letters (redriven or not) of b's store.
func deadLetterCount(t *testing.T, b *bundle) int {
	t.Helper()
	dls, err := b.store.DeadLetters(context.Background(), dedup.DeadLetterFilter{IncludeRedriven: true, Limit: 10000})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return len(dls)
}

// deliverUntilAcked delivers msg until the chain acknowledges it (a
// delivery that lost a deadlock or whose burial failed is retried, as the
// broker would), at most 50 times.
func deliverUntilAcked(b *bundle, msg *idemq.Message, attempt int) error {
	var err error
	for range 50 {
		if err = b.deliver(msg, attempt); err == nil {
			return nil
		}
		if idemq.IsPermanent(err) {
			return err
		}
	}
	return err
}

// Sixteen copies of one message failing permanently at the same moment
// leave one dead letter, on every database; so do two deliveries of a
// message whose key is unusable.
func TestStandardSQLConcurrentPermanentBuriedOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, 0, func(int, *idemq.Message) error {
			return idemq.Permanent(errors.New("order 42 does not exist"))
		})
		msg := sqlMessage()
		var wg sync.WaitGroup
		errs := make([]error, 16)
		start := make(chan struct{})
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = deliverUntilAcked(b, msg, 1)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("copy %d not acknowledged: %v", i, err)
			}
		}
		if n := deadLetterCount(t, b); n != 1 {
			t.Fatalf("%d dead letters for one message failing in 16 copies, want 1", n)
		}
		if b.effectCount(t) != 0 {
			t.Fatal("a permanent failure left an effect")
		}
	})
}

// Every hostile message ends processed (its handler ran once, its effect
// is committed) or buried (one dead letter), however often it is
// delivered: NUL bytes and invalid UTF-8 in the message ID, key, group,
// topic, tags and properties, keys too long, an empty group, a 10 MB body.
func TestStandardSQLHostileInputsEndProcessedOrBuried(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		var permanent atomic.Bool
		b := setupHostile(t, d, func() error {
			if permanent.Load() {
				return idemq.Permanent(errors.New("cannot handle this"))
			}
			return nil
		})
		big := bytes.Repeat([]byte("x"), 10<<20)
		cases := []struct {
			name   string
			edit   func(m *idemq.Message)
			fail   bool // the handler fails permanently
			buried bool // want a dead letter, else want it processed
		}{
			{"NUL in ID, usable key", func(m *idemq.Message) { m.ID = "71\x0001" }, false, false},
			{"invalid UTF-8 ID, usable key", func(m *idemq.Message) { m.ID = "71\xff01" }, false, false},
			{"invalid UTF-8 ID, usable key, failing", func(m *idemq.Message) { m.ID = "72\xfe\x0001" }, true, true},
			{"NUL in topic, tags, properties", func(m *idemq.Message) {
				m.Topic, m.Tags, m.Properties = "or\x00ders", "pa\xffid", map[string]string{"t\x00": "v\xff"}
			}, false, false},
			{"NUL in topic, tags, properties, failing", func(m *idemq.Message) {
				m.Topic, m.Tags, m.Keys, m.Properties = "or\x00ders", "pa\xffid", []string{"\x00", "\xff"}, map[string]string{"t\x00": "v\xff"}
			}, true, true},
			{"10 MB body, failing", func(m *idemq.Message) { m.Body = big }, true, true},
			{"10 MB body", func(m *idemq.Message) { m.Body = big }, false, false},
			{"empty key and ID", func(m *idemq.Message) { m.ID, m.Key = "", "" }, false, true},
			{"10 KB key", func(m *idemq.Message) { m.Key = strings.Repeat("k", 10<<10) }, false, true},
			{"NUL in key", func(m *idemq.Message) { m.Key = "order:\x00" }, false, true},
			{"invalid UTF-8 key", func(m *idemq.Message) { m.Key = "order:\xff" }, false, true},
			{"empty group", func(m *idemq.Message) { m.Group = "" }, false, true},
			{"NUL in group", func(m *idemq.Message) { m.Group = "rew\x00ards" }, false, true},
			{"invalid UTF-8 group", func(m *idemq.Message) { m.Group = "rew\xffards" }, false, true},
		}
		for i, tc := range cases {
			msg := sqlMessage()
			msg.ID = fmt.Sprintf("73000000000000%05d", i)
			msg.Key = fmt.Sprintf("order:%d", i)
			tc.edit(msg)
			permanent.Store(tc.fail)
			deadBefore, callsBefore := deadLetterCount(t, b), b.calls.Load()
			for attempt := 1; attempt <= 2; attempt++ {
				if err := b.deliver(msg, attempt); err != nil {
					t.Fatalf("%s: delivery %d not acknowledged: %v", tc.name, attempt, err)
				}
			}
			dead, calls := deadLetterCount(t, b)-deadBefore, b.calls.Load()-callsBefore
			switch {
			case tc.buried && dead != 1:
				t.Errorf("%s: %d dead letters after two deliveries, want 1", tc.name, dead)
			case !tc.buried && (dead != 0 || calls != 1):
				t.Errorf("%s: %d dead letters and %d handler runs, want processed once", tc.name, dead, calls)
			}
		}
		if got := b.effectCount(t); got != 4 {
			t.Errorf("effects = %d, want 4 (one per processed message)", got)
		}
	})
}

// setupHostile is setup with a handler that records only the dedup key (a
// hostile body or topic cannot go into the effects table) and then returns
// verdict().
func setupHostile(t *testing.T, d testenv.DB, verdict func() error) *bundle {
	t.Helper()
	b := setup(t, d, 0, nil)
	h := idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		if err := dedup.Tx(ctx).Exec("INSERT INTO "+b.effects+" (k, body) VALUES (?, '')", msg.DedupKey()).Error; err != nil {
			return fmt.Errorf("write effect: %w", err)
		}
		b.calls.Add(1)
		return verdict()
	})
	mws, err := middleware.Standard(middleware.StandardConfig{Store: b.store, Ledger: b.store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if b.chain, err = idemq.Chain(h, mws...); err != nil {
		t.Fatal(err)
	}
	return b
}

// Standard refuses a store whose retention does not outlast the retry
// horizon of the policy in use (8h03m for the default policy over 16
// attempts, longer than the broker's default ladder the store checks
// against) plus the redrive window.
func TestStandardRejectsRetentionShorterThanPolicyHorizon(t *testing.T) {
	db := testenv.OpenSQLite(t)
	newChain := func(keep time.Duration, policy middleware.RetryPolicy) error {
		store, err := sqldedup.New(db, sqldedup.Config{Retention: dedup.Retention{Keep: keep}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("sqldedup.New(keep %s): %v", keep, err)
		}
		_, err = middleware.Standard(middleware.StandardConfig{Store: store, Ledger: store, RetryPolicy: policy})
		return err
	}
	// 30h passes the store's own check (4h47m + 24h) but not the policy's.
	if err := newChain(30*time.Hour, middleware.RetryPolicy{}); !errors.Is(err, dedup.ErrRetentionTooShort) {
		t.Fatalf("keep 30h with the default policy: %v, want ErrRetentionTooShort", err)
	}
	if err := newChain(33*time.Hour, middleware.RetryPolicy{}); err != nil {
		t.Fatalf("keep 33h with the default policy: %v", err)
	}
	if err := newChain(30*time.Hour, middleware.RetryPolicy{Max: time.Minute}); err != nil {
		t.Fatalf("keep 30h with delays capped at 1m: %v", err)
	}
}

// A database that cannot be reached fails deliveries with an
// infrastructure error, which is neither an attempt nor a reason to bury:
// after many deliveries during the outage (MaxAttempts 2), the message is
// processed once the database is back, with no attempt recorded. The
// store is cut through a TCP proxy (sqldedup marks the failures
// dedup.ErrUnavailable); the ledger is reached directly, so a failure it
// was wrongly asked to record would be recorded. SQLite has no connection
// to cut.
func TestStandardSQLOutageIsNotAnAttempt(t *testing.T) {
	for _, d := range testenv.Databases() {
		if d.Dialect == "sqlite" {
			continue
		}
		t.Run(d.Name, func(t *testing.T) {
			direct := d.Open(t)
			var proxy *testenv.Proxy
			var dsnVia string
			if d.Dialect == "postgres" {
				proxy = testenv.NewProxy(t, testenv.PostgresAddr(t))
				dsnVia = testenv.PostgresDSNVia(t, proxy.Addr())
			} else {
				proxy = testenv.NewProxy(t, testenv.MySQLAddr(t))
				dsnVia = testenv.MySQLDSNVia(t, proxy.Addr())
			}
			proxied := openDSN(t, d.Dialect, dsnVia)
			prefix := testenv.TablePrefix(t)
			cfg := sqldedup.Config{TablePrefix: prefix, Logger: slog.New(slog.DiscardHandler)}
			ledger, err := sqldedup.New(direct, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := ledger.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			testenv.DropTables(t, direct, ledger.Table("dedup"), ledger.Table("attempts"), ledger.Table("dead_letters"))
			store, err := sqldedup.New(proxied, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int32
			mws, err := middleware.Standard(middleware.StandardConfig{
				Store: store, Ledger: ledger,
				DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 2},
				Logger:     slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			h, err := idemq.Chain(idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
				calls.Add(1)
				return nil
			}), mws...)
			if err != nil {
				t.Fatal(err)
			}
			msg := sqlMessage()
			proxy.Cut()
			for attempt := 1; attempt <= 4; attempt++ {
				m := msg.Clone()
				m.Attempt = attempt
				err := h.Handle(context.Background(), m)
				if err == nil || !dedup.IsInfrastructure(err) {
					t.Fatalf("delivery %d during the outage: %v, want an infrastructure error", attempt, err)
				}
			}
			rec, err := ledger.Attempts(context.Background(), msg.Group, msg.Key)
			if err != nil || rec.Count != 0 {
				t.Fatalf("attempts during the outage = %+v, %v; want none", rec, err)
			}
			dls, err := ledger.DeadLetters(context.Background(), dedup.DeadLetterFilter{})
			if err != nil || len(dls) != 0 {
				t.Fatalf("dead letters during the outage = %d, %v; want none", len(dls), err)
			}
			proxy.Restore()
			testenv.Eventually(t, 10*time.Second, "delivery after the outage", func() bool {
				m := msg.Clone()
				m.Attempt = 5
				return h.Handle(context.Background(), m) == nil
			})
			if calls.Load() != 1 {
				t.Fatalf("handler ran %d times, want once", calls.Load())
			}
		})
	}
}

// openDSN opens a PostgreSQL or MySQL database at dsn, closed when the test
// ends.
func openDSN(t *testing.T, dialect, dsn string) *gorm.DB {
	t.Helper()
	var dialector gorm.Dialector = postgres.Open(dsn)
	if dialect == "mysql" {
		dialector = mysql.Open(dsn)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("open %s: %v", dialect, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}
