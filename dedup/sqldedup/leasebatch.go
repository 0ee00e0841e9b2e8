package sqldedup

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/idemq/idemq/dedup"
)

// mark is a lease-mode DONE mark: owner's claim on (group, key).
type mark struct{ group, key, owner string }

// markCall is a queued mark; its answer is nil, an error wrapping
// dedup.ErrLeaseLost, or the statement's error.
type markCall = call[mark, error]

// markDone marks (group, key) DONE if owner still holds it.
//
// On SQLite with a pool of one connection (shareLease) the marks of
// concurrent deliveries share a statement (combiner), as their claims do
// (insertClaimShared); each keeps its own answer, exactly as the single
// statement gives it. The statements would queue for the one connection
// anyway, and a shared one commits once for the batch.
//
// PostgreSQL and MySQL/MariaDB run every claim and mark as its own
// statement. Both servers run concurrent statements in parallel and share
// the log flush of concurrent commits (group commit), so sharing a
// statement saves little there, and it costs: a delivery waits for the
// batch already running before its own can start. Measured with
// idemq-bench at c=8 on PostgreSQL, shared claims and marks gave lease/a
// 0.26 against 0.38 with one statement each (on SQLite 0.39 shared against
// 0.28; on SQLite with a pool of several connections, sharing was 3 to 5
// times slower than one statement each). MySQL/MariaDB has no UPDATE ... RETURNING to tell the marks of a
// batch apart in the first place.
func (s *Store) markDone(group, key, owner string) error {
	if !s.shareLease() {
		return s.runMark(context.Background(), mark{group, key, owner})
	}
	return s.marks.do([2]string{group, key}, mark{group, key, owner}, s.runMarks)
}

// shareLease reports whether lease-mode claims and marks share statements:
// on SQLite whose pool holds one connection (sqlitedb.Open's, as the
// package recommends), where every write queues for that connection
// anyway. With more connections, writers wait in SQLite's busy handler
// instead, and a delivery that also waits for a running batch measured
// several times slower than one statement each.
func (s *Store) shareLease() bool {
	if s.dialect != "sqlite" {
		return false
	}
	sqlDB, err := s.db.DB()
	return err == nil && sqlDB.Stats().MaxOpenConnections == 1
}

// runMark runs one mark as its own statement.
func (s *Store) runMark(ctx context.Context, m mark) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.markStatements.Add(1)
	r := s.db.WithContext(ctx).Exec(s.sql.markDone, m.group, m.key, m.owner)
	switch {
	case r.Error != nil:
		return fmt.Errorf("sqldedup: mark done: %w", r.Error)
	case r.RowsAffected == 0:
		return lostMark(m)
	}
	return nil
}

// runMarks runs a batch of marks and answers each. Its context outlives
// the deliveries: their effects happened, record them.
func (s *Store) runMarks(batch []*markCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(batch) > 1 && s.dialect == "sqlite" {
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
		m.reply <- answer[error]{a: s.runMark(ctx, m.q)}
	}
}

func lostMark(m mark) error {
	return fmt.Errorf("sqldedup: mark done of %s/%s: %w", m.group, m.key, dedup.ErrLeaseLost)
}

// markMany marks a batch DONE in one UPDATE ... RETURNING (SQLite) and
// returns the owner tokens whose rows it marked. Owner tokens are unique to
// one claim, so they name the marks.
func (s *Store) markMany(ctx context.Context, batch []*markCall) (map[string]bool, error) {
	if s.failMarkBatch != nil {
		if err := s.failMarkBatch(); err != nil {
			return nil, err
		}
	}
	// RETURNING gives the rows the UPDATE changed (with the owner already
	// cleared): their keys name the marks.
	where, args := markWhere(batch)
	var keys []struct{ ConsumerGroup, DedupKey string }
	if err := s.db.WithContext(ctx).Raw(s.sql.markDoneSet+where+" RETURNING consumer_group, dedup_key", args...).Scan(&keys).Error; err != nil {
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

// insertClaimShared inserts owner's PROCESSING row for req's key on
// SQLite (see markDone for why only there): claims of
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
