package middleware

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// scriptedStore is a dedup.Store that answers with a fixed result, running
// fn only when the result is Processed, and remembers the requests.
type scriptedStore struct {
	mu   sync.Mutex
	res  dedup.Result
	err  error // returned instead of calling fn
	reqs []dedup.Request
}

func (s *scriptedStore) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	if s.err != nil {
		return dedup.Result{}, s.err
	}
	if s.res.Outcome != dedup.Processed {
		return s.res, nil
	}
	if err := fn(ctx); err != nil {
		return dedup.Result{}, err
	}
	return s.res, nil
}

func (s *scriptedStore) requests() []dedup.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]dedup.Request(nil), s.reqs...)
}

// fakeLedger is an in-memory dedup.Ledger that records its calls.
type fakeLedger struct {
	mu         sync.Mutex
	records    map[string]*dedup.Attempts
	buried     []dedup.DeadLetter
	recordErr  error
	clearErr   error
	buryErr    error
	recordArgs []int // attempt argument of every RecordFailure
	clears     int
	calls      int
}

func newFakeLedger() *fakeLedger { return &fakeLedger{records: map[string]*dedup.Attempts{}} }

func (l *fakeLedger) RecordFailure(_ context.Context, group, key string, attempt int, cause error) (dedup.Attempts, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	l.recordArgs = append(l.recordArgs, attempt)
	if l.recordErr != nil {
		return dedup.Attempts{}, l.recordErr
	}
	k := group + "\x00" + key
	rec := l.records[k]
	now := time.Date(2024, 1, 1, 0, 0, len(l.recordArgs), 0, time.UTC)
	if rec == nil {
		rec = &dedup.Attempts{Group: group, Key: key, FirstAt: now}
		l.records[k] = rec
	}
	rec.Count = max(rec.Count+1, attempt)
	rec.LastError = cause.Error()
	rec.LastAt = now
	rec.History = append(rec.History, dedup.AttemptError{Attempt: rec.Count, At: now, Error: cause.Error()})
	return *rec, nil
}

func (l *fakeLedger) ClearAttempts(_ context.Context, group, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	l.clears++
	if l.clearErr != nil {
		return l.clearErr
	}
	delete(l.records, group+"\x00"+key)
	return nil
}

func (l *fakeLedger) Bury(_ context.Context, dl *dedup.DeadLetter) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.buryErr != nil {
		return 0, l.buryErr
	}
	dl.ID = int64(len(l.buried) + 1)
	l.buried = append(l.buried, *dl)
	return dl.ID, nil
}

func (l *fakeLedger) DeadLetters(context.Context, dedup.DeadLetterFilter) ([]dedup.DeadLetter, error) {
	return nil, errors.New("fakeLedger: not used")
}

func (l *fakeLedger) DeadLetter(context.Context, int64) (*dedup.DeadLetter, error) {
	return nil, errors.New("fakeLedger: not used")
}

func (l *fakeLedger) Redrive(context.Context, int64, dedup.Publisher) error {
	return errors.New("fakeLedger: not used")
}

func (l *fakeLedger) callCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.records...)
}

// attrs returns a record's attributes by key, resolved to their values.
func attrs(r slog.Record) map[string]slog.Value {
	m := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Resolve()
		return true
	})
	return m
}

func testMessage() *idemq.Message {
	return &idemq.Message{
		ID:         "1234567890",
		Group:      "g1",
		Topic:      "orders",
		Tags:       "created",
		Keys:       []string{"1234567890", "order-7"},
		Body:       []byte(`{"order":7}`),
		Properties: map[string]string{"tenant": "acme"},
		Attempt:    1,
	}
}

// chain builds a handler or fails the test.
func chain(t *testing.T, h idemq.Handler, mws ...idemq.Middleware) idemq.Handler {
	t.Helper()
	c, err := idemq.Chain(h, mws...)
	if err != nil {
		t.Fatalf("Chain: %v", err)
	}
	return c
}

// must returns mw, or panics (failing the test) on a constructor error.
func must(mw idemq.Middleware, err error) idemq.Middleware {
	if err != nil {
		panic("middleware constructor: " + err.Error())
	}
	return mw
}

var errBoom = errors.New("boom")
