package deduptest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// effects records what handlers did: rows written through dedup.Tx in
// transactional mode, an in-memory count in lease mode (an external effect).
type effects struct {
	s     Subject
	table string
	mu    sync.Mutex
	n     map[string]int
}

func newEffects(t *testing.T, s Subject) *effects {
	t.Helper()
	e := &effects{s: s, n: map[string]int{}}
	if s.Mode == dedup.Transactional {
		if s.DB == nil {
			t.Fatal("transactional subject without DB")
		}
		e.table = s.Prefix + "effects"
		if err := s.DB.Exec("CREATE TABLE " + e.table + " (k VARCHAR(191) NOT NULL, v INTEGER NOT NULL)").Error; err != nil {
			t.Fatalf("create effects table: %v", err)
		}
	}
	return e
}

// write performs one effect for key.
func (e *effects) write(ctx context.Context, key string) error {
	if e.s.Mode == dedup.Transactional {
		tx := dedup.Tx(ctx)
		if tx == nil {
			return errors.New("deduptest: no transaction in the handler's context")
		}
		return tx.Exec("INSERT INTO "+e.table+" (k, v) VALUES (?, 1)", key).Error
	}
	e.mu.Lock()
	e.n[key]++
	e.mu.Unlock()
	return nil
}

// writeTx performs one effect for key through tx (transactional mode).
func (e *effects) writeTx(tx *gorm.DB, key string) error {
	return tx.Exec("INSERT INTO "+e.table+" (k, v) VALUES (?, 1)", key).Error
}

// fn returns a handler that performs one effect for key.
func (e *effects) fn(key string) dedup.Func {
	return func(ctx context.Context) error { return e.write(ctx, key) }
}

// count returns the durable number of effects for key.
func (e *effects) count(t *testing.T, key string) int {
	t.Helper()
	if e.s.Mode == dedup.Transactional {
		var n int64
		if err := e.s.DB.Raw("SELECT COUNT(*) FROM "+e.table+" WHERE k = ?", key).Scan(&n).Error; err != nil {
			t.Fatalf("count effects: %v", err)
		}
		return int(n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[key]
}

func (e *effects) expect(t *testing.T, key string, want int) {
	t.Helper()
	if got := e.count(t, key); got != want {
		t.Fatalf("effects for %q = %d, want %d", key, got, want)
	}
}

var seq struct {
	sync.Mutex
	n int
}

// uniqueKey returns a key no other test uses.
func uniqueKey(name string) string {
	seq.Lock()
	defer seq.Unlock()
	seq.n++
	return fmt.Sprintf("%s:%d:%d", name, time.Now().UnixNano(), seq.n)
}

func req(group, key string) dedup.Request {
	return dedup.Request{Group: group, Key: key, MessageID: "m-" + key, Fingerprint: dedup.Fingerprint([]byte(key))}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// settle redelivers while the store answers Busy, as a broker would, and
// returns the final result.
func settle(t *testing.T, s dedup.Store, r dedup.Request, fn dedup.Func) (dedup.Result, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := s.Process(ctxT(t), r, fn)
		if err != nil || res.Outcome != dedup.Busy {
			return res, err
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q still busy after 30s", r.Key)
		}
		wait := res.RetryAfter
		if wait < 10*time.Millisecond {
			wait = 10 * time.Millisecond
		}
		if wait > time.Second {
			wait = time.Second
		}
		time.Sleep(wait)
	}
}

func mustOutcome(t *testing.T, res dedup.Result, err error, want dedup.Outcome) {
	t.Helper()
	if err != nil {
		t.Fatalf("Process: %v (want %s)", err, want)
	}
	if res.Outcome != want {
		t.Fatalf("outcome = %s, want %s (result %+v)", res.Outcome, want, res)
	}
}
