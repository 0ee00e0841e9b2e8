package sqldedup

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

type rowState struct {
	Status      int
	Fingerprint string
	Remaining   int64
}

// processTx runs fn in a transaction that first inserts the dedup row.
func (s *Store) processTx(ctx context.Context, req dedup.Request, fn dedup.Func) (res dedup.Result, err error) {
	if s.fastBegin != "" {
		return s.processTxFast(ctx, req, fn)
	}
	tx := s.db.WithContext(ctx).Begin(s.txOptions())
	if tx.Error != nil {
		return dedup.Result{}, fmt.Errorf("sqldedup: begin: %w", tx.Error)
	}
	finished := false
	defer func() {
		if !finished {
			// fn panicked: roll back, then let the panic continue.
			tx.Rollback()
		}
	}()

	n, err := s.insertDoneRow(ctx, tx, req)
	if err != nil {
		finished = true
		tx.Rollback()
		return dedup.Result{}, fmt.Errorf("sqldedup: insert dedup row: %w", err)
	}
	if n == 0 {
		// Someone committed this key first. Read what they stored, then
		// leave without touching anything.
		res, err := s.duplicate(ctx, tx, req)
		finished = true
		tx.Rollback()
		return res, err
	}

	ferr := fn(dedup.WithTx(ctx, tx))
	finished = true
	if ferr != nil {
		tx.Rollback()
		return dedup.Result{}, ferr
	}
	if err := tx.Commit().Error; err != nil {
		return dedup.Result{}, fmt.Errorf("sqldedup: commit: %w", err)
	}
	return dedup.Result{Outcome: dedup.Processed}, nil
}

func (s *Store) txOptions() *sql.TxOptions { return s.cfg.TxOptions }

// duplicate describes an existing row as a Duplicate (or Busy) result.
func (s *Store) duplicate(ctx context.Context, db *gorm.DB, req dedup.Request) (dedup.Result, error) {
	var st rowState
	r := db.WithContext(ctx).Raw(s.sql.selectRow, req.Group, req.Key).Scan(&st)
	if r.Error != nil {
		return dedup.Result{}, fmt.Errorf("sqldedup: read dedup row: %w", r.Error)
	}
	if r.RowsAffected == 0 {
		// The row vanished between the insert and the read (a release or a
		// cleanup): not a duplicate. Ask for a quick redelivery.
		return dedup.Result{Outcome: dedup.Busy}, nil
	}
	return s.stateResult(req, st), nil
}

func (s *Store) stateResult(req dedup.Request, st rowState) dedup.Result {
	switch st.Status {
	case statusProcessing:
		rem := msDuration(st.Remaining)
		if rem < 0 {
			rem = 0
		}
		return dedup.Result{Outcome: dedup.Busy, RetryAfter: rem}
	case statusDead:
		return dedup.Result{Outcome: dedup.Duplicate, Dead: true}
	default:
		return dedup.Result{
			Outcome:  dedup.Duplicate,
			Mismatch: req.Fingerprint != "" && st.Fingerprint != "" && st.Fingerprint != req.Fingerprint,
		}
	}
}

// insertDoneRow inserts the done row in tx and returns the rows affected.
// It goes straight to the transaction's connection: the statement is fixed,
// so gorm's statement building would be pure overhead on the hot path.
func (s *Store) insertDoneRow(ctx context.Context, tx *gorm.DB, req dedup.Request) (int64, error) {
	q := s.sql.insertDone
	if s.dialect == "postgres" {
		q = s.sql.insertDonePG
	}
	res, err := tx.Statement.ConnPool.ExecContext(ctx, q, s.insertDoneArgs(req)...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// insertDoneArgs are the arguments of the insertDone query.
func (s *Store) insertDoneArgs(req dedup.Request) []any {
	if s.dialect == "sqlite" {
		now := time.Now().UnixMilli()
		return []any{req.Group, req.Key, req.MessageID, req.Fingerprint, now, now}
	}
	return []any{req.Group, req.Key, req.MessageID, req.Fingerprint}
}
