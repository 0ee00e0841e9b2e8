package sqldedup

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// maxMarkBatch is the most lease-mode DONE marks one statement carries.
const maxMarkBatch = 64

// markBatcher lets the DONE marks of concurrent lease-mode deliveries share
// one statement (and one commit). There is no goroutine of its own: the
// first caller that finds no batch running becomes the leader and runs the
// marks queued so far, its own among them; marks that arrive meanwhile
// queue, and when the leader's batch ends it hands the lead to the first of
// them. A lone mark therefore runs at once, as a single statement, and under
// load each statement carries the marks that queued during the previous
// one. Every mark keeps its own answer: applied (the row was this owner's
// PROCESSING row and is now DONE) or lost (dedup.ErrLeaseLost), exactly as
// the single statement answers it.
type markBatcher struct {
	mu      sync.Mutex
	running bool
	queue   []*markReq
}

type markReq struct {
	group, key, owner string
	// reply carries the mark's result, or nil with lead set: run the queue.
	reply chan markReply
}

type markReply struct {
	err  error
	lead bool
}

// mark marks (group, key) DONE if owner still holds it, and returns nil,
// an error wrapping dedup.ErrLeaseLost if it does not, or the statement's
// error.
func (b *markBatcher) mark(s *Store, group, key, owner string) error {
	m := &markReq{group: group, key: key, owner: owner, reply: make(chan markReply, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, m)
	if b.running {
		b.mu.Unlock()
		r := <-m.reply
		if !r.lead {
			return r.err
		}
		b.mu.Lock() // lead: the queue holds m
	}
	b.running = true
	batch := b.take()
	b.mu.Unlock()

	s.runMarks(batch)

	b.mu.Lock()
	if len(b.queue) > 0 {
		b.queue[0].reply <- markReply{lead: true}
	} else {
		b.running = false
		b.queue = nil
	}
	b.mu.Unlock()
	r := <-m.reply
	return r.err
}

// take removes the next batch from the queue: up to maxMarkBatch marks, at
// most one per key (a zombie owner's mark and its successor's may queue
// together; the rows a batch changed are told apart by key), in queue
// order. b.mu is held.
func (b *markBatcher) take() []*markReq {
	batch := make([]*markReq, 0, min(len(b.queue), maxMarkBatch))
	seen := make(map[[2]string]bool, cap(batch))
	rest := b.queue[:0]
	for _, m := range b.queue {
		k := [2]string{m.group, m.key}
		if len(batch) == maxMarkBatch || seen[k] {
			rest = append(rest, m)
			continue
		}
		seen[k] = true
		batch = append(batch, m)
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	return batch
}

// runMarks runs a batch of marks and answers each. Its context outlives
// the deliveries: their effects happened, record them.
func (s *Store) runMarks(batch []*markReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(batch) > 1 {
		s.markStatements.Add(1)
		applied, err := s.markMany(ctx, batch)
		if err == nil {
			for _, m := range batch {
				if applied[m.owner] {
					m.reply <- markReply{}
				} else {
					m.reply <- markReply{err: lostMark(m)}
				}
			}
			return
		}
		// The shared statement failed (a deadlock, a lock wait, a lost
		// connection): nothing of it applied. Mark one by one, so that
		// one failure costs one delivery its mark, not the whole batch.
		s.cfg.Logger.Warn("sqldedup: a batch of lease marks failed; marking one by one",
			"marks", len(batch), "err", err)
	}
	for _, m := range batch {
		s.markStatements.Add(1)
		r := s.db.WithContext(ctx).Exec(s.sql.markDone, m.group, m.key, m.owner)
		switch {
		case r.Error != nil:
			m.reply <- markReply{err: fmt.Errorf("sqldedup: mark done: %w", r.Error)}
		case r.RowsAffected == 0:
			m.reply <- markReply{err: lostMark(m)}
		default:
			m.reply <- markReply{}
		}
	}
}

func lostMark(m *markReq) error {
	return fmt.Errorf("sqldedup: mark done of %s/%s: %w", m.group, m.key, dedup.ErrLeaseLost)
}

// markMany marks a batch DONE in one statement (and one transaction) and
// returns the owner tokens whose rows it marked. Owner tokens are unique to
// one claim, so they name the marks.
func (s *Store) markMany(ctx context.Context, batch []*markReq) (map[string]bool, error) {
	if s.failMarkBatch != nil {
		if err := s.failMarkBatch(); err != nil {
			return nil, err
		}
	}
	where, args := markWhere(batch)
	if s.dialect != "mysql" {
		// RETURNING gives the rows the UPDATE changed (with the owner
		// already cleared): their keys name the marks.
		var keys []struct{ ConsumerGroup, DedupKey string }
		if err := s.db.WithContext(ctx).Raw(s.sql.markDoneSet+where+" RETURNING consumer_group, dedup_key", args...).Scan(&keys).Error; err != nil {
			return nil, err
		}
		return appliedOwners(batch, keys), nil
	}
	// MySQL has no UPDATE ... RETURNING: lock the rows this batch still
	// holds, then mark exactly those, in one READ COMMITTED transaction
	// through the primary key (markLockQuery), which locks those rows
	// and no gaps: claims of neighbouring keys never wait for it.
	var keys []struct{ ConsumerGroup, DedupKey string }
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Raw(s.markLockQuery(where), args...).Scan(&keys).Error; err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		r := tx.Exec(s.markUpdateMySQL(where), args...)
		if r.Error != nil {
			return r.Error
		}
		if r.RowsAffected != int64(len(keys)) {
			return fmt.Errorf("marked %d rows, locked %d", r.RowsAffected, len(keys))
		}
		return nil
	}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	return appliedOwners(batch, keys), nil
}

// markWhere is the WHERE clause that selects the rows a batch of marks
// still holds, and its arguments: one equality on the primary key and the
// owner per mark.
func markWhere(batch []*markReq) (string, []any) {
	var where strings.Builder
	args := make([]any, 0, 3*len(batch))
	where.WriteString(" WHERE status = 1 AND (")
	for i, m := range batch {
		if i > 0 {
			where.WriteString(" OR ")
		}
		where.WriteString("(consumer_group = ? AND dedup_key = ? AND owner = ?)")
		args = append(args, m.group, m.key, m.owner)
	}
	where.WriteString(")")
	return where.String(), args
}

// markLockQuery locks the rows a batch of marks still holds (MySQL). The
// primary key is forced: the optimizer would otherwise pick the
// (status, created_at) index, whose status = 1 range holds every claim
// in flight, and lock them all.
func (s *Store) markLockQuery(where string) string {
	return "SELECT consumer_group, dedup_key FROM " + s.prefix + "dedup FORCE INDEX (PRIMARY)" + where + " FOR UPDATE"
}

// markUpdateMySQL marks the rows markLockQuery locked, through the
// primary key too.
func (s *Store) markUpdateMySQL(where string) string {
	return "UPDATE " + s.prefix + "dedup FORCE INDEX (PRIMARY) SET status = 2, owner = '', lease_until = 0, updated_at = " + s.sql.now + where
}

// appliedOwners maps the (group, key) rows a batch marked to the owners
// of its marks. A batch never holds two marks of one key: a key has one
// owner at a time, and that owner marks once.
func appliedOwners(batch []*markReq, keys []struct{ ConsumerGroup, DedupKey string }) map[string]bool {
	byKey := make(map[[2]string]string, len(batch))
	for _, m := range batch {
		byKey[[2]string{m.group, m.key}] = m.owner
	}
	applied := make(map[string]bool, len(keys))
	for _, k := range keys {
		if o, ok := byKey[[2]string{k.ConsumerGroup, k.DedupKey}]; ok {
			applied[o] = true
		}
	}
	return applied
}
