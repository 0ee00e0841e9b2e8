package admin_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/producer/outbox"
)

// bundle is one test's database, prefix and values over them.
type bundle struct {
	ctx    context.Context
	db     *gorm.DB
	prefix string
	admin  *admin.Admin
	store  *sqldedup.Store
	sent   *sentLog
}

// sentLog is a Sender that records what it publishes, and fails while
// fail is set.
type sentLog struct {
	mu   sync.Mutex
	msgs []*idemq.Message
	fail error
}

func (s *sentLog) send(_ context.Context, m *idemq.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.msgs = append(s.msgs, m)
	return nil
}

func (s *sentLog) all() []*idemq.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*idemq.Message(nil), s.msgs...)
}

func allTables(prefix string) []string {
	var out []string
	for _, n := range []string{"dedup", "attempts", "dead_letters", "outbox", "node_leases", "tx_records", "audit_log", "schema_migrations"} {
		out = append(out, prefix+n)
	}
	return out
}

// setup migrates every component under a fresh prefix on d.
func setup(t *testing.T, d testenv.DB) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	db := d.Open(t)
	prefix := testenv.TablePrefix(t)
	testenv.DropTables(t, db, allTables(prefix)...)
	b := &bundle{ctx: ctx, db: db, prefix: prefix, sent: &sentLog{}}
	var err error
	b.admin, err = admin.New(db, admin.Config{TablePrefix: prefix, Sender: b.sent.send})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.Migrate(ctx, false); err != nil {
		t.Fatal(err)
	}
	b.store, err = sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bury dead-letters a message the way the DeadLetter middleware does:
// failures recorded, then buried.
func (b *bundle) bury(t *testing.T, group, topic, key, reason string) int64 {
	t.Helper()
	if _, err := b.store.RecordFailure(b.ctx, group, key, 1, errors.New(reason)); err != nil {
		t.Fatal(err)
	}
	id, err := b.store.Bury(b.ctx, &dedup.DeadLetter{
		Group: group, Key: key, MessageID: "m-" + key, Topic: topic, Tags: "t", Keys: []string{"k-" + key},
		Body: []byte("body of " + key), Properties: map[string]string{"p": key}, Attempts: 3, Reason: reason,
		History: []dedup.AttemptError{{Attempt: 1, At: time.Now().UTC(), Error: reason}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newOutbox returns an outbox over the bundle's tables.
func (b *bundle) newOutbox(t *testing.T) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.New(b.db, outbox.Config{IDSource: &seqIDs{}, TablePrefix: b.prefix})
	if err != nil {
		t.Fatal(err)
	}
	return ob
}

type seqIDs struct {
	mu sync.Mutex
	n  int
}

func (s *seqIDs) NextID() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return fmt.Sprintf("ob-%d-%d", time.Now().UnixNano(), s.n), nil
}
