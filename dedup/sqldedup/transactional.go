package sqldedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

type rowState struct {
	Status      int
	Fingerprint string
	Remaining   int64
}

// processTx runs fn in a transaction that first inserts the dedup row. A
// run that loses a conflict (see isConflict) rolled back everything, so it
// is run again, fn included, up to maxConflictRetries times.
func (s *Store) processTx(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	for try := 0; ; try++ {
		res, err, conflict := s.processTxOnce(ctx, req, fn)
		if !conflict {
			return res, err
		}
		if try == maxConflictRetries {
			return dedup.Result{}, dedup.Conflict(err)
		}
		s.conflictRetries.Add(1)
		if berr := conflictBackoff(ctx, try); berr != nil {
			return dedup.Result{}, dedup.Conflict(err)
		}
	}
}

// storeTx is the transaction of one transactional-mode run: an ordinary
// gorm transaction (plainTx) or one begun on a pinned connection
// (pinnedTx). Its statements go straight to the transaction.
type storeTx interface {
	gorm.ConnPool
	// commit commits and returns ErrNotCommitted if the database rolled
	// back instead.
	commit() error
	rollback()
	// close rolls back a transaction that is still open (fn panicked) and
	// releases the connection.
	close()
}

// plainTx is a transaction begun with gorm's Begin.
type plainTx struct {
	gorm.ConnPool
	tx   *gorm.DB
	done bool
}

func (p *plainTx) commit() error {
	p.done = true
	err := p.tx.Commit().Error
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		// pgx read ROLLBACK in answer to COMMIT.
		return fmt.Errorf("%w: %w", ErrNotCommitted, err)
	}
	return err
}

func (p *plainTx) rollback() {
	if !p.done {
		p.done = true
		p.tx.Rollback()
	}
}

func (p *plainTx) close() { p.rollback() }

// begin starts the run's transaction and inserts the dedup row. first
// reports whether the row is new.
func (s *Store) begin(ctx context.Context, req dedup.Request) (t storeTx, first bool, err error) {
	if s.fastBegin != "" {
		p, first, err := s.beginInsert(ctx, req)
		if err != nil {
			return nil, false, err
		}
		return p, first, nil
	}
	tx := s.db.WithContext(ctx).Begin(s.txOptions())
	if tx.Error != nil {
		return nil, false, fmt.Errorf("begin: %w", tx.Error)
	}
	pt := &plainTx{ConnPool: tx.Statement.ConnPool, tx: tx}
	first, err = s.insertDoneRow(ctx, pt, req)
	if err != nil {
		pt.rollback()
		return nil, false, fmt.Errorf("insert dedup row: %w", err)
	}
	return pt, first, nil
}

// session returns a *gorm.DB whose statements run on pool.
func (s *Store) session(ctx context.Context, pool gorm.ConnPool) *gorm.DB {
	db := s.db.Session(&gorm.Session{NewDB: true, Context: ctx})
	db.Statement.ConnPool = pool
	return db
}

// processTxOnce is one run of processTx. conflict reports that the run lost
// a conflict and rolled back, so that another run may succeed.
func (s *Store) processTxOnce(ctx context.Context, req dedup.Request, fn dedup.Func) (res dedup.Result, err error, conflict bool) {
	t, first, err := s.begin(ctx, req)
	if err != nil {
		err = storeError(ctx, fmt.Errorf("sqldedup: %w", err))
		return dedup.Result{}, err, errors.Is(err, dedup.ErrConflict)
	}
	defer t.close()
	if !first {
		// Someone committed this key first. Read what they stored, then
		// leave without touching anything.
		res, err := s.duplicate(ctx, s.session(ctx, t), req)
		t.rollback()
		err = storeError(ctx, err)
		return res, err, errors.Is(err, dedup.ErrConflict)
	}

	g := newTxGuard(t, s.dialect)
	ferr := fn(dedup.WithTx(ctx, s.session(ctx, g)))
	failed := g.failure()
	if ferr != nil || failed != nil {
		t.rollback()
		return s.handlerFailure(ctx, g, ferr, failed)
	}
	if err := t.commit(); err != nil {
		switch {
		case errors.Is(err, ErrNotCommitted):
			return dedup.Result{}, err, false
		case isConflict(err):
			return dedup.Result{}, fmt.Errorf("sqldedup: commit: %w", err), true
		case isUnavailable(err):
			return dedup.Result{}, dedup.Unavailable(fmt.Errorf(
				"sqldedup: commit outcome unknown (a redelivery finds the key done if it committed): %w", err)), false
		}
		return dedup.Result{}, fmt.Errorf("sqldedup: commit: %w", err), false
	}
	return dedup.Result{Outcome: dedup.Processed}, nil, false
}

// handlerFailure decides what a run whose transaction was rolled back
// returns: fn's error ferr unchanged, unless the transaction itself failed
// (failed, the first statement failure fn did not undo, which fn may have
// swallowed) in a way that is not fn's fault.
func (s *Store) handlerFailure(ctx context.Context, g *txGuard, ferr, failed error) (dedup.Result, error, bool) {
	if ferr == nil {
		// fn returned nil over a failed statement: never commit that.
		err := fmt.Errorf("%w (the handler returned nil; rolled back): %w", ErrStatementFailed, failed)
		if isConflict(failed) {
			return dedup.Result{}, err, true
		}
		if isUnavailable(failed) {
			return dedup.Result{}, dedup.Unavailable(err), false
		}
		return dedup.Result{}, err, false
	}
	// A conflict rolled the transaction back (or the handler met one):
	// whatever fn concluded from it, a new run decides again.
	if isConflict(failed) || (isConflict(ferr) && !idemq.IsPermanent(ferr)) {
		return dedup.Result{}, ferr, true
	}
	// fn failed because the transaction's connection did.
	if g.owns(ferr) && isUnavailable(failed) && ctx.Err() == nil && !idemq.IsPermanent(ferr) {
		return dedup.Result{}, dedup.Unavailable(ferr), false
	}
	return dedup.Result{}, ferr, false
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

// mismatch reports whether a row's fingerprint and the request's are both
// known and differ.
func mismatch(req dedup.Request, st rowState) bool {
	return req.Fingerprint != "" && st.Fingerprint != "" && st.Fingerprint != req.Fingerprint
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
		// A dead row keeps the fingerprint of the message buried under it:
		// another message under the key is a mismatch, to be buried too,
		// not acknowledged as that message's redelivery.
		return dedup.Result{Outcome: dedup.Duplicate, Dead: true, Mismatch: mismatch(req, st)}
	default:
		return dedup.Result{Outcome: dedup.Duplicate, Mismatch: mismatch(req, st)}
	}
}

// insertDoneRow inserts the done row in t and reports whether it is new.
// It goes straight to the transaction's connection: the statement is fixed,
// so gorm's statement building would be pure overhead on the hot path.
func (s *Store) insertDoneRow(ctx context.Context, t gorm.ConnPool, req dedup.Request) (bool, error) {
	q := s.sql.insertDone
	if s.dialect == "postgres" {
		q = s.sql.insertDonePG
	}
	res, err := t.ExecContext(ctx, q, s.insertDoneArgs(req)...)
	if err != nil {
		return false, err
	}
	return s.inserted(res)
}

// inserted reports whether an insert-or-nothing (queries.insertDone and
// insertClaim) inserted its row. On MySQL/MariaDB the rows-affected count
// cannot tell: with the DSN setting clientFoundRows=true a duplicate
// counts as a row found. There the duplicate branch sets
// LAST_INSERT_ID(status), a status is never 0, and the table has no
// AUTO_INCREMENT column: the insert ID is 0 exactly when the row is new,
// whatever the DSN says.
func (s *Store) inserted(res sql.Result) (bool, error) {
	if s.dialect == "mysql" {
		id, err := res.LastInsertId()
		return err == nil && id == 0, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// insertDoneArgs are the arguments of the insertDone query.
func (s *Store) insertDoneArgs(req dedup.Request) []any {
	if s.dialect == "sqlite" {
		now := time.Now().UnixMilli()
		return []any{req.Group, req.Key, req.MessageID, req.Fingerprint, now, now}
	}
	return []any{req.Group, req.Key, req.MessageID, req.Fingerprint}
}
