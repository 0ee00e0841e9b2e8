package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// seqIDs hands out increasing IDs, like the producer's snowflake generator.
type seqIDs struct{ n atomic.Int64 }

func (s *seqIDs) NextID() (string, error) {
	return strconv.FormatInt(1_000_000+s.n.Add(1), 10), nil
}

// bundle is one test's outbox on one database.
type bundle struct {
	db      *gorm.DB
	ob      *Outbox
	dialect string
	prefix  string
}

// forEachDB runs fn once per supported database.
func forEachDB(t *testing.T, fn func(t *testing.T, d testenv.DB)) {
	t.Helper()
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) { fn(t, d) })
	}
}

// setup opens d and creates an outbox table under a fresh prefix.
func setup(t *testing.T, d testenv.DB, cfg Config) *bundle {
	t.Helper()
	db := d.Open(t)
	prefix := testenv.TablePrefix(t)
	cfg.TablePrefix = prefix
	if cfg.IDSource == nil {
		cfg.IDSource = &seqIDs{}
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	ob, err := New(db, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	testenv.DropTables(t, db, ob.Table(), prefix+"schema_migrations")
	return &bundle{db: db, ob: ob, dialect: d.Dialect, prefix: prefix}
}

// enqueue commits msgs in one transaction and returns their IDs.
func (b *bundle) enqueue(t testing.TB, msgs ...*idemq.Message) []string {
	t.Helper()
	ids := make([]string, len(msgs))
	err := b.db.Transaction(func(tx *gorm.DB) error {
		for i, m := range msgs {
			if err := b.ob.Enqueue(tx, m); err != nil {
				return err
			}
			ids[i] = m.ID
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return ids
}

// enqueueN commits n messages on topic in transactions of 500.
func (b *bundle) enqueueN(t testing.TB, topic string, n int) []string {
	t.Helper()
	var ids []string
	for start := 0; start < n; start += 500 {
		var msgs []*idemq.Message
		for i := start; i < min(n, start+500); i++ {
			msgs = append(msgs, &idemq.Message{Topic: topic, Body: []byte("m" + strconv.Itoa(i))})
		}
		ids = append(ids, b.enqueue(t, msgs...)...)
	}
	return ids
}

// ago returns a SQL expression for the database time d ago and its argument.
func (b *bundle) ago(d time.Duration) (string, any) { return b.ob.d.plus(-d) }

func (b *bundle) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if err := b.db.Exec(q, args...).Error; err != nil {
		t.Fatalf("exec %q: %v", q, err)
	}
}

func (b *bundle) get(t testing.TB, id string) *Entry {
	t.Helper()
	e, err := b.ob.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return e
}

func (b *bundle) stats(t testing.TB) Stats {
	t.Helper()
	s, err := b.ob.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return s
}

func newRelay(t testing.TB, ob *Outbox, s Sender, cfg RelayConfig) *Relay {
	t.Helper()
	r, err := NewRelay(ob, s, cfg)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	return r
}

// fastRetry is a relay config that retries within milliseconds.
func fastRetry(cfg RelayConfig) RelayConfig {
	cfg.Backoff = Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2, Jitter: 0.2}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	return cfg
}

// sent is one call of the recording sender.
type sent struct {
	msg *idemq.Message
	err error
}

// recSender records every Send. fail, when set, decides each call's error.
type recSender struct {
	mu       sync.Mutex
	calls    []sent
	inflight map[string]bool
	overlap  []string
	fail     func(msg *idemq.Message, call int) error
	n        atomic.Int64
}

func (s *recSender) Send(ctx context.Context, msg *idemq.Message) (string, error) {
	call := int(s.n.Add(1))
	s.mu.Lock()
	if s.inflight == nil {
		s.inflight = map[string]bool{}
	}
	if s.inflight[msg.ID] {
		s.overlap = append(s.overlap, msg.ID)
	}
	s.inflight[msg.ID] = true
	s.mu.Unlock()
	var err error
	if s.fail != nil {
		err = s.fail(msg, call)
	}
	s.mu.Lock()
	delete(s.inflight, msg.ID)
	s.calls = append(s.calls, sent{msg: msg.Clone(), err: err})
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("BROKER-%d", call), nil
}

// delivered counts successful sends per message ID.
func (s *recSender) delivered() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for _, c := range s.calls {
		if c.err == nil {
			m[c.msg.ID]++
		}
	}
	return m
}

func (s *recSender) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// waitFor polls cond until it holds; it fails the test after a generous
// limit, which only a hang reaches.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, what, cond)
}

// drain runs RunOnce until the outbox has no pending row.
func drain(t testing.TB, b *bundle, r *Relay) {
	t.Helper()
	waitFor(t, "an empty backlog", func() bool {
		if _, err := r.RunOnce(context.Background()); err != nil {
			t.Fatalf("RunOnce: %v", err)
		}
		return b.stats(t).Pending == 0
	})
}

// quiet discards the relay's logs in tests.
var quiet = slog.New(slog.DiscardHandler)

var errBroker = errors.New("broker unavailable")

const (
	time1ms = time.Millisecond
	time1s  = time.Second
)
