package sqldedup

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// Retention returns the store's retention, defaults applied. It implements
// dedup.RetentionReporter, so that middleware.Standard can check it against
// the retry policy in use.
func (s *Store) Retention() dedup.Retention { return s.cfg.Retention }

var _ dedup.RetentionReporter = (*Store)(nil)

// Swept counts the rows one cleanup deleted, by table.
type Swept struct {
	// Dedup is the number of done keys deleted from the dedup table.
	Dedup int64
	// Attempts is the number of attempts records deleted.
	Attempts int64
	// DeadLetters is the number of redriven dead letters deleted.
	DeadLetters int64
}

// Total returns the number of rows deleted from all tables.
func (w Swept) Total() int64 { return w.Dedup + w.Attempts + w.DeadLetters }

// sweepKind is one table's cleanup.
type sweepKind int

const (
	sweepDedup sweepKind = iota
	sweepAttempts
	sweepDeadLetters
)

func (k sweepKind) table() string {
	return [...]string{"dedup", "attempts", "dead_letters"}[k]
}

// cleanupQueries builds the statement that deletes one batch of expired
// rows of kind k, oldest first. Its arguments are (cutoff, limit), and for
// PostgreSQL and SQLite cutoff once more. Each finds its rows through an
// index ordered by time (migration step 0003), so a batch reads what it
// deletes, not the table:
//
//   - dedup: done rows (status 2) whose created_at is before the cutoff;
//     PostgreSQL and SQLite use the partial index on done rows' created_at,
//     MySQL/MariaDB the index (status, created_at). Processing and dead rows
//     are never selected.
//   - attempts: records whose last failure is before the cutoff (index on
//     last_at).
//   - dead letters: letters redriven before the cutoff (index on
//     redriven_at); a dead letter that was never redriven is never deleted.
//
// PostgreSQL locks the batch's rows with FOR UPDATE SKIP LOCKED, so it
// never waits for a row another session holds (a Bury locking its key);
// MySQL/MariaDB run the batch in a READ COMMITTED transaction, which locks
// the rows it deletes and no gaps, so concurrent inserts never wait for it
// (a server logging binlog_format=STATEMENT refuses such writes; ROW and
// MIXED, the defaults, accept them).
func cleanupQuery(dialect, prefix string, k sweepKind) string {
	t := prefix + k.table()
	var where, order, pk string
	switch k {
	case sweepDedup:
		where, order, pk = "status = 2 AND created_at < ?", "created_at", "consumer_group, dedup_key"
	case sweepAttempts:
		where, order, pk = "last_at < ?", "last_at", "consumer_group, dedup_key"
	case sweepDeadLetters:
		where, order, pk = "redriven_at IS NOT NULL AND redriven_at < ?", "redriven_at", "id"
	}
	if dialect == "mysql" {
		return "DELETE FROM " + t + " WHERE " + where + " ORDER BY " + order + " LIMIT ?"
	}
	lock := ""
	if dialect == "postgres" {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	return "DELETE FROM " + t + " WHERE (" + pk + ") IN (SELECT " + pk + " FROM " + t +
		" WHERE " + where + " ORDER BY " + order + " LIMIT ?" + lock + ") AND " + where
}

// cutoff returns the database clock minus the retention, in Unix ms: rows
// older than it may be deleted.
func (s *Store) cutoff(ctx context.Context) (int64, error) {
	now, err := s.now(ctx, s.db)
	if err != nil {
		return 0, err
	}
	return now - s.cfg.Retention.Keep.Milliseconds(), nil
}

// deleteBatch deletes at most limit rows of kind k older than cutoff and
// returns how many it deleted.
func (s *Store) deleteBatch(ctx context.Context, k sweepKind, cutoff int64, limit int) (int64, error) {
	q := cleanupQuery(s.dialect, s.prefix, k)
	args := []any{cutoff, limit}
	if s.dialect != "mysql" {
		args = append(args, cutoff)
	}
	var n int64
	run := func(db *gorm.DB) error {
		r := db.Exec(q, args...)
		n = r.RowsAffected
		return r.Error
	}
	var err error
	if s.dialect == "mysql" {
		err = s.db.WithContext(ctx).Transaction(run, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	} else {
		err = run(s.db.WithContext(ctx))
	}
	if err != nil {
		return 0, fmt.Errorf("sqldedup: cleanup %s: %w", k.table(), err)
	}
	return n, nil
}

// pauseFunc runs between two cleanup batches, told the rows the last one
// deleted and the time it took; an error stops the sweep.
type pauseFunc func(ctx context.Context, deleted int64, took time.Duration) error

// sweep deletes rows of kind k older than cutoff in batches of
// CleanupBatch, oldest first, until a batch comes back short. pause, if
// not nil, runs between batches.
func (s *Store) sweep(ctx context.Context, k sweepKind, cutoff int64, pause pauseFunc) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		start := time.Now()
		n, err := s.deleteBatch(ctx, k, cutoff, s.cfg.CleanupBatch)
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(s.cfg.CleanupBatch) {
			return total, nil
		}
		if pause != nil {
			if err := pause(ctx, n, time.Since(start)); err != nil {
				return total, err
			}
		}
	}
}

// Sweep deletes, by the database clock, every row past the retention
// (Config.Retention.Keep): done keys created before it, attempts records
// whose last failure is before it, and dead letters redriven before it. It
// never deletes a processing or dead key, nor a dead letter that was not
// redriven. Rows are found through indexes ordered by time and deleted
// oldest first, CleanupBatch rows per statement, so each statement costs
// what it deletes and holds few locks whatever the table's size. The
// cutoff is read once, so a Sweep ends even under a steady insert load.
// Janitor runs it in the background with a pace and metrics.
func (s *Store) Sweep(ctx context.Context) (Swept, error) {
	return s.sweepAll(ctx, nil)
}

func (s *Store) sweepAll(ctx context.Context, pause pauseFunc) (Swept, error) {
	var w Swept
	cutoff, err := s.cutoff(ctx)
	if err != nil {
		return w, err
	}
	if w.Dedup, err = s.sweep(ctx, sweepDedup, cutoff, pause); err != nil {
		return w, err
	}
	if w.Attempts, err = s.sweep(ctx, sweepAttempts, cutoff, pause); err != nil {
		return w, err
	}
	w.DeadLetters, err = s.sweep(ctx, sweepDeadLetters, cutoff, pause)
	return w, err
}

// Cleanup deletes done keys older than the retention period, by the
// database clock, oldest first in batches of CleanupBatch rows found
// through the index on done rows' creation time (see Sweep, which also
// deletes expired attempts records and redriven dead letters). Processing
// and dead rows are kept. It returns the number of dedup rows deleted.
func (s *Store) Cleanup(ctx context.Context) (int64, error) {
	cutoff, err := s.cutoff(ctx)
	if err != nil {
		return 0, err
	}
	return s.sweep(ctx, sweepDedup, cutoff, nil)
}
