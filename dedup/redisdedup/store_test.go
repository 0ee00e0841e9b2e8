package redisdedup

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/idemq/idemq/dedup"
)

// mapStore is an in-memory dedup.Store used as the fast path's inner store
// in tests. Like the transactional SQL store, a second delivery of a key
// waits while the first runs, then is a duplicate (first succeeded) or runs
// (first failed).
type mapStore struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
	done  map[string]string // key -> fingerprint
	dead  map[string]bool

	calls atomic.Int64 // Process calls that reached the store
}

func newMapStore() *mapStore {
	return &mapStore{
		locks: make(map[string]*sync.Mutex),
		done:  make(map[string]string),
		dead:  make(map[string]bool),
	}
}

func mapKey(group, key string) string { return redisKey("", "", group, key) }

func (s *mapStore) keyLock(k string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[k]
	if l == nil {
		l = new(sync.Mutex)
		s.locks[k] = l
	}
	return l
}

func (s *mapStore) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	s.calls.Add(1)
	if err := req.Validate(); err != nil {
		return dedup.Result{}, err
	}
	if fn == nil {
		return dedup.Result{}, dedup.ErrNilFunc
	}
	k := mapKey(req.Group, req.Key)
	l := s.keyLock(k)
	l.Lock()
	defer l.Unlock()

	s.mu.Lock()
	fp, done := s.done[k]
	dead := s.dead[k]
	s.mu.Unlock()
	if dead {
		return dedup.Result{Outcome: dedup.Duplicate, Dead: true}, nil
	}
	if done {
		return dedup.Result{
			Outcome:  dedup.Duplicate,
			Mismatch: fp != "" && req.Fingerprint != "" && fp != req.Fingerprint,
		}, nil
	}
	if err := fn(ctx); err != nil {
		return dedup.Result{}, err
	}
	s.mu.Lock()
	s.done[k] = req.Fingerprint
	s.mu.Unlock()
	return dedup.Result{Outcome: dedup.Processed}, nil
}

func (s *mapStore) MarkDead(_ context.Context, group, key string) error {
	k := mapKey(group, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, done := s.done[k]; !done {
		s.dead[k] = true
	}
	return nil
}

func (s *mapStore) ClearDead(_ context.Context, group, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.dead, mapKey(group, key))
	return nil
}

// plainStore hides mapStore's DeadMarker methods.
type plainStore struct{ inner *mapStore }

func (s plainStore) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	return s.inner.Process(ctx, req, fn)
}
