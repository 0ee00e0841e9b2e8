package sqldedup

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// mark is a lease-mode DONE mark: owner's claim on (group, key).
type mark struct{ group, key, owner string }

// markCall is a queued mark; its answer is nil, an error wrapping
// dedup.ErrLeaseLost, or the statement's error.
type markCall = call[mark, error]

// markDone marks (group, key) DONE if owner still holds it. Marks of
// concurrent deliveries share a statement (combiner); each keeps its own
// answer, exactly as the single statement gives it.
func (s *Store) markDone(group, key, owner string) error {
	return s.marks.do([2]string{group, key}, mark{group, key, owner}, s.runMarks)
}

// runMarks runs a batch of marks and answers each. Its context outlives
// the deliveries: their effects happened, record them.
func (s *Store) runMarks(batch []*markCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(batch) > 1 {
		s.markStatements.Add(1)
		applied, err := s.markMany(ctx, batch)
		if err == nil {
			for _, m := range batch {
				if applied[m.q.owner] {
					m.reply <- answer[error]{}
				} else {
					m.reply <- answer[error]{a: lostMark(m.q)}
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
		r := s.db.WithContext(ctx).Exec(s.sql.markDone, m.q.group, m.q.key, m.q.owner)
		switch {
		case r.Error != nil:
			m.reply <- answer[error]{a: fmt.Errorf("sqldedup: mark done: %w", r.Error)}
		case r.RowsAffected == 0:
			m.reply <- answer[error]{a: lostMark(m.q)}
		default:
			m.reply <- answer[error]{}
		}
	}
}

func lostMark(m mark) error {
	return fmt.Errorf("sqldedup: mark done of %s/%s: %w", m.group, m.key, dedup.ErrLeaseLost)
}

// markMany marks a batch DONE in one statement (and one transaction) and
// returns the owner tokens whose rows it marked. Owner tokens are unique to
// one claim, so they name the marks.
func (s *Store) markMany(ctx context.Context, batch []*markCall) (map[string]bool, error) {
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
func markWhere(batch []*markCall) (string, []any) {
	var where strings.Builder
	args := make([]any, 0, 3*len(batch))
	where.WriteString(" WHERE status = 1 AND (")
	for i, m := range batch {
		if i > 0 {
			where.WriteString(" OR ")
		}
		where.WriteString("(consumer_group = ? AND dedup_key = ? AND owner = ?)")
		args = append(args, m.q.group, m.q.key, m.q.owner)
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
// of its marks. A batch holds at most one mark per key (combiner.take).
func appliedOwners(batch []*markCall, keys []struct{ ConsumerGroup, DedupKey string }) map[string]bool {
	byKey := make(map[[2]string]string, len(batch))
	for _, m := range batch {
		byKey[m.key] = m.q.owner
	}
	applied := make(map[string]bool, len(keys))
	for _, k := range keys {
		if o, ok := byKey[[2]string{k.ConsumerGroup, k.DedupKey}]; ok {
			applied[o] = true
		}
	}
	return applied
}

// claimQ is a lease-mode claim by insert: a new PROCESSING row for owner.
type claimQ struct {
	req     dedup.Request
	owner   string
	leaseMS int64
}

// claimA answers a claimQ: whether the row was inserted, its fencing
// token, and when the statement that inserted it was sent (the lease
// counts from then).
type claimA struct {
	claimed bool
	fence   uint64
	sentAt  time.Time
	err     error
}

type claimCall = call[claimQ, claimA]

// insertClaimShared inserts owner's PROCESSING row for req's key where
// the dialect returns the claimed rows (PostgreSQL, SQLite): claims of
// concurrent deliveries share one multi-row INSERT ... ON CONFLICT DO
// NOTHING RETURNING (combiner), each answered on its own. A key already
// present is answered "not claimed", exactly as the single insert answers
// it; the caller goes on to take over or read the row.
func (s *Store) insertClaimShared(req dedup.Request, owner string, leaseMS int64) (bool, uint64, time.Time, error) {
	a := s.claims.do([2]string{req.Group, req.Key}, claimQ{req, owner, leaseMS}, s.runClaims)
	return a.claimed, a.fence, a.sentAt, a.err
}

// runClaims runs a batch of claims and answers each. The rows go in key
// order, so two batches (of two processes) that share keys lock them in
// the same order and cannot deadlock.
func (s *Store) runClaims(batch []*claimCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(batch) > 1 {
		slices.SortFunc(batch, func(a, b *claimCall) int {
			if c := strings.Compare(a.key[0], b.key[0]); c != 0 {
				return c
			}
			return strings.Compare(a.key[1], b.key[1])
		})
		var q strings.Builder
		q.WriteString(s.sql.claimHead)
		args := make([]any, 0, 6*len(batch))
		for i, c := range batch {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString(s.sql.claimRow)
			args = append(args, c.q.req.Group, c.q.req.Key, c.q.owner, c.q.leaseMS, c.q.req.MessageID, c.q.req.Fingerprint)
		}
		q.WriteString(s.sql.claimTail)
		var rows []struct {
			ConsumerGroup, DedupKey string
			Fence                   uint64
		}
		s.claimStatements.Add(1)
		sentAt := time.Now()
		var err error
		if s.failClaimBatch != nil {
			err = s.failClaimBatch()
		}
		if err == nil {
			err = s.db.WithContext(ctx).Raw(q.String(), args...).Scan(&rows).Error
		}
		if err == nil {
			fences := make(map[[2]string]uint64, len(rows))
			for _, r := range rows {
				fences[[2]string{r.ConsumerGroup, r.DedupKey}] = r.Fence
			}
			for _, c := range batch {
				f := fences[c.key]
				c.reply <- answer[claimA]{a: claimA{claimed: f != 0, fence: f, sentAt: sentAt}}
			}
			return
		}
		// Nothing of the shared statement applied: claim one by one, so
		// that a row the database refuses costs its own delivery only.
		s.cfg.Logger.Warn("sqldedup: a batch of lease claims failed; claiming one by one",
			"claims", len(batch), "err", err)
	}
	for _, c := range batch {
		s.claimStatements.Add(1)
		sentAt := time.Now()
		args := []any{c.q.req.Group, c.q.req.Key, c.q.owner, c.q.leaseMS, c.q.req.MessageID, c.q.req.Fingerprint}
		ok, fence, err := s.returnFence(ctx, s.sql.insertClaimRet, args)
		c.reply <- answer[claimA]{a: claimA{claimed: ok, fence: fence, sentAt: sentAt, err: err}}
	}
}
