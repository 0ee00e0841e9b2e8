package middleware_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
)

// These tests run the Standard chain on a real database through sqldedup in
// transactional mode: SQLite always, PostgreSQL and MySQL when the test
// script provides them.

// bundle is one chain on fresh tables.
type bundle struct {
	store   *sqldedup.Store
	db      *gorm.DB
	effects string
	chain   idemq.Handler
	// handle is the business handler; it writes its effect through the
	// dedup transaction and then returns fail's verdict for this call.
	fail  func(call int, msg *idemq.Message) error
	calls atomic.Int32
	// seenAttempt is msg.Attempt as the last successful call saw it.
	seenAttempt atomic.Int32
}

func setup(t *testing.T, d testenv.DB, maxAttempts int, fail func(call int, msg *idemq.Message) error) *bundle {
	t.Helper()
	db := d.Open(t)
	prefix := testenv.TablePrefix(t)
	store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("sqldedup.New: %v", err)
	}
	if err := store.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	b := &bundle{store: store, db: db, effects: prefix + "effects", fail: fail}
	if err := db.Exec("CREATE TABLE " + b.effects + " (k VARCHAR(191) PRIMARY KEY, body VARCHAR(191) NOT NULL)").Error; err != nil {
		t.Fatalf("create effects table: %v", err)
	}
	testenv.DropTables(t, db, b.effects, store.Table("dedup"), store.Table("attempts"), store.Table("dead_letters"), store.Table("schema_migrations"))

	mws, err := middleware.Standard(middleware.StandardConfig{
		Store:      store,
		Ledger:     store,
		DeadLetter: middleware.DeadLetterConfig{MaxAttempts: maxAttempts},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("Standard: %v", err)
	}
	b.chain, err = idemq.Chain(idemq.HandlerFunc(b.handle), mws...)
	if err != nil {
		t.Fatalf("Chain: %v", err)
	}
	return b
}

func (b *bundle) handle(ctx context.Context, msg *idemq.Message) error {
	tx := dedup.Tx(ctx)
	if tx == nil {
		return errors.New("no dedup transaction in the handler's context")
	}
	if err := tx.Exec("INSERT INTO "+b.effects+" (k, body) VALUES (?, ?)", msg.DedupKey(), string(msg.Body)).Error; err != nil {
		return fmt.Errorf("write effect: %w", err)
	}
	call := int(b.calls.Add(1))
	if err := b.fail(call, msg); err != nil {
		return err
	}
	b.seenAttempt.Store(int32(msg.Attempt))
	return nil
}

// effects counts the committed effect rows.
func (b *bundle) effectCount(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := b.db.Raw("SELECT COUNT(*) FROM " + b.effects).Scan(&n).Error; err != nil {
		t.Fatalf("count effects: %v", err)
	}
	return n
}

// deliver hands the chain one delivery of msg with the transport's attempt
// number, as a RocketMQ consumer does (ReconsumeTimes+1), on a copy so
// that what the chain changes does not leak into the next delivery.
func (b *bundle) deliver(msg *idemq.Message, attempt int) error {
	m := msg.Clone()
	m.Attempt = attempt
	return b.chain.Handle(context.Background(), m)
}

// redeliver delivers msg until the chain acknowledges it, at most limit
// times, and returns the number of deliveries.
func (b *bundle) redeliver(t *testing.T, msg *idemq.Message, limit int) int {
	t.Helper()
	for attempt := 1; attempt <= limit; attempt++ {
		err := b.deliver(msg, attempt)
		if err == nil {
			return attempt
		}
		if idemq.IsPermanent(err) {
			t.Fatalf("attempt %d: permanent error escaped the chain: %v", attempt, err)
		}
	}
	t.Fatalf("not acknowledged after %d deliveries", limit)
	return 0
}

func sqlMessage() *idemq.Message {
	return &idemq.Message{
		ID:         "7100000000000000001",
		Key:        "order:42:redpacket",
		Group:      "rewards",
		Topic:      "orders",
		Tags:       "paid",
		Keys:       []string{"7100000000000000001", "order-42"},
		Body:       []byte(`{"order":42,"amount":100}`),
		Properties: map[string]string{idemq.PropertyMessageID: "7100000000000000001", "tenant": "acme"},
	}
}

func forEachDB(t *testing.T, fn func(t *testing.T, d testenv.DB)) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) { fn(t, d) })
	}
}

func TestStandardSQLRetryThenSuccess(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, 0, func(call int, _ *idemq.Message) error {
			if call <= 2 {
				return fmt.Errorf("transient failure %d", call)
			}
			return nil
		})
		msg := sqlMessage()
		if n := b.redeliver(t, msg, 10); n != 3 {
			t.Fatalf("acknowledged after %d deliveries, want 3", n)
		}
		if got := b.effectCount(t); got != 1 {
			t.Fatalf("effects = %d, want exactly 1 (failed attempts must roll back)", got)
		}
		if got := b.seenAttempt.Load(); got != 3 {
			t.Errorf("handler saw attempt %d on success, want 3", got)
		}
		rec, err := b.store.Attempts(context.Background(), msg.Group, msg.Key)
		if err != nil || rec.Count != 0 {
			t.Errorf("attempts after success = %+v, %v; want cleared", rec, err)
		}
		// A late redelivery is a duplicate: acknowledged, handler not run.
		if err := b.deliver(msg, 4); err != nil {
			t.Fatalf("duplicate: %v", err)
		}
		if b.calls.Load() != 3 || b.effectCount(t) != 1 {
			t.Errorf("duplicate ran the handler: calls %d, effects %d", b.calls.Load(), b.effectCount(t))
		}
	})
}

func TestStandardSQLPermanentDeadLetter(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, 0, func(call int, _ *idemq.Message) error {
			if call == 1 {
				return errors.New("inventory service timeout")
			}
			return idemq.Permanent(errors.New("order 42 does not exist"))
		})
		msg := sqlMessage()
		if n := b.redeliver(t, msg, 5); n != 2 {
			t.Fatalf("acknowledged after %d deliveries, want 2", n)
		}
		dl := onlyDeadLetter(t, b)
		want := dedup.DeadLetter{
			Group: msg.Group, Key: msg.Key, MessageID: msg.ID, Topic: msg.Topic, Tags: msg.Tags,
			Keys: msg.Keys, Body: msg.Body, Properties: msg.Properties, Attempts: 2,
			Reason:   "permanent: order 42 does not exist",
			BodySize: int64(len(msg.Body)), BodySHA256: sha256Hex(msg.Body),
		}
		got := dl
		got.ID, got.History, got.FirstFailedAt, got.DeadAt = 0, nil, dl.FirstFailedAt, dl.DeadAt
		want.FirstFailedAt, want.DeadAt = dl.FirstFailedAt, dl.DeadAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("dead letter =\n%+v\nwant\n%+v", got, want)
		}
		if h := historyErrors(dl); !reflect.DeepEqual(h, []string{"inventory service timeout", "permanent: order 42 does not exist"}) {
			t.Errorf("history = %q", h)
		}
		if dl.FirstFailedAt.IsZero() || dl.DeadAt.Before(dl.FirstFailedAt) {
			t.Errorf("times: first failed %v, dead %v", dl.FirstFailedAt, dl.DeadAt)
		}
		if b.effectCount(t) != 0 {
			t.Error("a dead-lettered message left an effect")
		}
		// Later deliveries of the key are duplicates.
		if err := b.deliver(msg, 3); err != nil {
			t.Fatalf("delivery after dead letter: %v", err)
		}
		if b.calls.Load() != 2 {
			t.Errorf("handler ran for a dead key: %d calls", b.calls.Load())
		}
	})
}

func TestStandardSQLMaxAttempts(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, 4, func(call int, _ *idemq.Message) error {
			return fmt.Errorf("still failing (%d)", call)
		})
		msg := sqlMessage()
		if n := b.redeliver(t, msg, 10); n != 4 {
			t.Fatalf("acknowledged after %d deliveries, want 4 (MaxAttempts)", n)
		}
		dl := onlyDeadLetter(t, b)
		if dl.Attempts != 4 || dl.Reason != "still failing (4)" {
			t.Errorf("dead letter attempts %d reason %q", dl.Attempts, dl.Reason)
		}
		want := []string{"still failing (1)", "still failing (2)", "still failing (3)", "still failing (4)"}
		if h := historyErrors(dl); !reflect.DeepEqual(h, want) {
			t.Errorf("history = %q, want %q", h, want)
		}
	})
}

func TestStandardSQLMaxAttemptsAcrossResend(t *testing.T) {
	// The transport forgets its count when a message is re-sent; the
	// ledger does not, so the message is still buried at MaxAttempts.
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, 4, func(int, *idemq.Message) error { return errors.New("down") })
		msg := sqlMessage()
		for _, attempt := range []int{1, 2, 1} { // re-sent after two failures
			if err := b.deliver(msg, attempt); err == nil {
				t.Fatalf("attempt %d acknowledged", attempt)
			}
		}
		if err := b.deliver(msg, 2); err != nil {
			t.Fatalf("fourth failure must be buried, got %v", err)
		}
		if dl := onlyDeadLetter(t, b); dl.Attempts != 4 {
			t.Errorf("attempts = %d, want 4", dl.Attempts)
		}
	})
}

func TestStandardSQLRedrive(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		var fixed atomic.Bool
		b := setup(t, d, 0, func(_ int, _ *idemq.Message) error {
			if !fixed.Load() {
				return idemq.Permanent(errors.New("missing price"))
			}
			return nil
		})
		msg := sqlMessage()
		if err := b.deliver(msg, 1); err != nil {
			t.Fatalf("permanent failure not buried: %v", err)
		}
		dl := onlyDeadLetter(t, b)

		// The operator fixes the cause and redrives. The publisher stands
		// for the broker: it feeds the message back through the chain.
		fixed.Store(true)
		var published []*idemq.Message
		publish := func(ctx context.Context, m *idemq.Message) error {
			published = append(published, m.Clone())
			m.Attempt = 1
			return b.chain.Handle(ctx, m)
		}
		ctx := context.Background()
		if err := b.store.Redrive(ctx, dl.ID, publish); err != nil {
			t.Fatalf("Redrive: %v", err)
		}
		if len(published) != 1 || published[0].ID != msg.ID || published[0].Property(idemq.PropertyMessageID) != msg.ID {
			t.Fatalf("published %+v, want the original message ID", published)
		}
		if got := b.effectCount(t); got != 1 {
			t.Fatalf("effects after redrive = %d, want 1", got)
		}
		// Exactly once more: a second redrive is refused, and the
		// broker's late copies of the message are duplicates.
		if err := b.store.Redrive(ctx, dl.ID, publish); !errors.Is(err, dedup.ErrAlreadyRedriven) {
			t.Errorf("second redrive: %v, want ErrAlreadyRedriven", err)
		}
		if err := b.deliver(msg, 2); err != nil {
			t.Fatalf("late copy: %v", err)
		}
		if got := b.effectCount(t); got != 1 || b.calls.Load() != 2 {
			t.Errorf("effects %d, calls %d; want 1 and 2", got, b.calls.Load())
		}
	})
}

func TestStandardSQLPanicRollsBack(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, 0, func(call int, _ *idemq.Message) error {
			if call == 1 {
				panic("nil map write in handler")
			}
			return nil
		})
		msg := sqlMessage()
		err := b.deliver(msg, 1)
		var pe *middleware.PanicError
		if !errors.As(err, &pe) || idemq.IsPermanent(err) {
			t.Fatalf("err = %v, want a retryable *PanicError", err)
		}
		if got := b.effectCount(t); got != 0 {
			t.Fatalf("the panicking attempt's effect was committed (%d rows)", got)
		}
		rec, aerr := b.store.Attempts(context.Background(), msg.Group, msg.Key)
		if aerr != nil || rec.Count != 1 || rec.LastError != pe.Error() {
			t.Errorf("attempts = %+v, %v; want the panic recorded", rec, aerr)
		}
		if err := b.deliver(msg, 2); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if got := b.effectCount(t); got != 1 {
			t.Fatalf("effects = %d, want 1", got)
		}
	})
}

func onlyDeadLetter(t *testing.T, b *bundle) dedup.DeadLetter {
	t.Helper()
	dls, err := b.store.DeadLetters(context.Background(), dedup.DeadLetterFilter{})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	return dls[0]
}

func historyErrors(dl dedup.DeadLetter) []string {
	var out []string
	for _, h := range dl.History {
		out = append(out, h.Error)
	}
	return out
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
