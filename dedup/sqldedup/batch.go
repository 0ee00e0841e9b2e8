package sqldedup

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// MaxBatch is the largest number of requests ProcessBatch takes.
const MaxBatch = 1000

// BatchFunc is the work of one batch: fresh lists the indexes (into the
// requests given to ProcessBatch) of the first deliveries, in order. ctx
// carries the transaction (dedup.Tx).
type BatchFunc func(ctx context.Context, fresh []int) error

// ProcessBatch is transactional-mode dedup for a batch of deliveries of one
// consumer group: one transaction inserts every key with a single
// multi-row statement, fn runs with the indexes of the keys that were new,
// and one commit makes the rows and fn's effects durable together. If fn
// fails, or a statement in its transaction fails and fn does not roll back
// to a savepoint set before it (see Process), nothing of the batch is
// recorded and an error is returned. A key that appears twice in the batch
// is a duplicate the second time.
//
// Failures that are not fn's are handled as in Process: a conflict reruns
// the whole batch in place (fn included), and an unreachable database is
// an error wrapping dedup.ErrUnavailable.
//
// The returned outcomes are, per request, Processed or Duplicate (Dead and
// mismatch are not reported in batch mode; use Process for them).
func (s *Store) ProcessBatch(ctx context.Context, reqs []dedup.Request, fn BatchFunc) ([]dedup.Outcome, error) {
	if s.cfg.Mode != Transactional {
		return nil, errors.New("sqldedup: ProcessBatch needs a transactional-mode store")
	}
	if fn == nil {
		return nil, dedup.ErrNilFunc
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	if len(reqs) > MaxBatch {
		return nil, fmt.Errorf("sqldedup: batch of %d exceeds %d", len(reqs), MaxBatch)
	}
	group := reqs[0].Group
	outcomes := make([]dedup.Outcome, len(reqs))
	first := make(map[string]int, len(reqs))
	var uniq []int
	for i, r := range reqs {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("sqldedup: batch request %d: %w", i, err)
		}
		if r.Group != group {
			return nil, fmt.Errorf("sqldedup: batch mixes consumer groups %q and %q", group, r.Group)
		}
		if _, seen := first[r.Key]; seen {
			outcomes[i] = dedup.Duplicate
			continue
		}
		first[r.Key] = i
		uniq = append(uniq, i)
	}
	// As in Process: a run that lost a conflict rolled back, fn included,
	// and is run again in place.
	for try := 0; ; try++ {
		out, err := s.processBatchOnce(ctx, group, reqs, uniq, append([]dedup.Outcome(nil), outcomes...), fn)
		if err == nil || !errors.Is(err, dedup.ErrConflict) {
			return out, err
		}
		if try == maxConflictRetries {
			return nil, err
		}
		s.conflictRetries.Add(1)
		if berr := conflictBackoff(ctx, try); berr != nil {
			return nil, err
		}
	}
}

// processBatchOnce is one run of ProcessBatch; outcomes holds the in-batch
// duplicates already. A conflict is returned wrapped in dedup.ErrConflict.
func (s *Store) processBatchOnce(ctx context.Context, group string, reqs []dedup.Request, uniq []int,
	outcomes []dedup.Outcome, fn BatchFunc) ([]dedup.Outcome, error) {
	tx := s.db.WithContext(ctx).Begin(s.cfg.TxOptions)
	if tx.Error != nil {
		return nil, storeError(ctx, fmt.Errorf("sqldedup: begin: %w", tx.Error))
	}
	finished := false
	defer func() {
		if !finished {
			tx.Rollback()
		}
	}()
	inserted, err := s.insertBatch(tx, group, reqs, uniq)
	if err != nil {
		finished = true
		tx.Rollback()
		return nil, storeError(ctx, fmt.Errorf("sqldedup: batch insert: %w", err))
	}
	fresh := make([]int, 0, len(inserted))
	for _, i := range uniq {
		if inserted[reqs[i].Key] {
			outcomes[i] = dedup.Processed
			fresh = append(fresh, i)
		} else {
			outcomes[i] = dedup.Duplicate
		}
	}
	if len(fresh) == 0 {
		finished = true
		tx.Rollback()
		return outcomes, nil
	}
	g := newTxGuard(tx.Statement.ConnPool, s.dialect)
	ferr := fn(dedup.WithTx(ctx, s.session(ctx, g)), fresh)
	finished = true
	failed := g.failure()
	if ferr != nil || failed != nil {
		tx.Rollback()
		_, err, conflict := s.handlerFailure(ctx, g, ferr, failed)
		if conflict {
			return nil, dedup.Conflict(err)
		}
		return nil, err
	}
	if err := (&plainTx{tx: tx}).commit(); err != nil {
		if errors.Is(err, ErrNotCommitted) {
			return nil, err
		}
		return nil, storeError(ctx, fmt.Errorf("sqldedup: commit: %w", err))
	}
	return outcomes, nil
}

// insertBatch inserts the keys at idx in one statement and returns the set
// of keys that were new.
func (s *Store) insertBatch(tx *gorm.DB, group string, reqs []dedup.Request, idx []int) (map[string]bool, error) {
	t := s.prefix + "dedup"
	now := s.sql.now
	var b strings.Builder
	args := make([]any, 0, len(idx)*5)
	token := ""
	if s.dialect == "mysql" {
		// MySQL has no INSERT ... RETURNING: tag this batch's rows with a
		// token and read back the tagged ones.
		token = newOwnerToken()
	}
	b.WriteString("INSERT INTO " + t + " (consumer_group, dedup_key, status, owner, message_id, fingerprint, created_at, updated_at) VALUES ")
	for n, i := range idx {
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?, ?, 2, ?, ?, ?, " + now + ", " + now + ")")
		args = append(args, group, reqs[i].Key, token, reqs[i].MessageID, reqs[i].Fingerprint)
	}
	out := make(map[string]bool, len(idx))
	if s.dialect != "mysql" {
		b.WriteString(" ON CONFLICT (consumer_group, dedup_key) DO NOTHING RETURNING dedup_key")
		var keys []string
		if err := tx.Raw(b.String(), args...).Scan(&keys).Error; err != nil {
			return nil, err
		}
		for _, k := range keys {
			out[k] = true
		}
		return out, nil
	}
	b.WriteString(" ON DUPLICATE KEY UPDATE status = status")
	if err := tx.Exec(b.String(), args...).Error; err != nil {
		return nil, err
	}
	keyArgs := make([]string, len(idx))
	for n, i := range idx {
		keyArgs[n] = reqs[i].Key
	}
	var keys []string
	if err := tx.Raw("SELECT dedup_key FROM "+t+" WHERE consumer_group = ? AND dedup_key IN ? AND owner = ?", group, keyArgs, token).Scan(&keys).Error; err != nil {
		return nil, err
	}
	for _, k := range keys {
		out[k] = true
	}
	return out, nil
}
