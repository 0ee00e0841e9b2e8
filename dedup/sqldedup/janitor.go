package sqldedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// JanitorConfig configures a Janitor. The zero value runs a pass every
// minute with a short pause between batches.
type JanitorConfig struct {
	// Interval is the time from the end of one pass to the start of the
	// next. Rows past retention wait at most about this long (plus the
	// pass) before they are deleted. Defaults to 1 minute.
	Interval time.Duration
	// BatchPause is the pause after every batch of Config.CleanupBatch
	// rows, which leaves the database to the consumers while a pass
	// catches up with a backlog. With the defaults (500 rows, 10ms) one
	// janitor beside a busy consumer deleted about 10,000 rows a second on
	// PostgreSQL and 2,500 on MariaDB on a loaded 2-core machine
	// (docs/capacity.md). A negative value means no pause.
	// Defaults to 10 milliseconds.
	BatchPause time.Duration
	// MaxRate caps the rows a pass deletes per second (the pause after a
	// batch is stretched to keep under it), for a janitor that should
	// catch up with a backlog gently: set it somewhat above the consumers'
	// insert rate, so that cleanup keeps up without competing with them
	// more than it must. Zero means no cap beyond BatchPause. Defaults to
	// 0.
	MaxRate int
	// Logger receives the janitor's failed passes. Defaults to the store's
	// logger.
	Logger *slog.Logger
}

// JanitorStats are a Janitor's counters since it was made.
type JanitorStats struct {
	// Deleted counts the rows deleted, by table.
	Deleted Swept
	// Passes counts the passes that ran to the end.
	Passes int64
	// Errors counts the passes that failed.
	Errors int64
	// LastPassEnd is when the last complete pass ended (zero before).
	LastPassEnd time.Time
}

// Janitor keeps a store's tables at their retention: it runs Store.Sweep
// in the background, a pass every Interval, pausing BatchPause after every
// batch, and counts what it deletes. Run one janitor per database and
// table prefix, in any one process (a consumer, a relay, a sidecar);
// running one in every replica is safe (batches are small and, on
// PostgreSQL, skip each other's rows) but buys nothing. A janitor keeps up
// when it deletes faster than the consumers insert: its metrics say
// whether it does (RegisterMetrics), and the IdemqDedupCleanupBehind alert
// fires when it does not.
type Janitor struct {
	s       *Store
	cfg     JanitorConfig
	dedup   atomic.Int64
	attempt atomic.Int64
	dead    atomic.Int64
	passes  atomic.Int64
	errs    atomic.Int64
	lastEnd atomic.Int64 // Unix ns; 0 before the first pass
}

// NewJanitor returns a janitor for s. It does not start it: call Run.
func NewJanitor(s *Store, cfg JanitorConfig) (*Janitor, error) {
	if s == nil {
		return nil, errors.New("sqldedup: nil store")
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("sqldedup: janitor interval %s is negative", cfg.Interval)
	}
	if cfg.BatchPause == 0 {
		cfg.BatchPause = 10 * time.Millisecond
	}
	if cfg.MaxRate < 0 {
		return nil, fmt.Errorf("sqldedup: janitor max rate %d is negative", cfg.MaxRate)
	}
	if cfg.Logger == nil {
		cfg.Logger = s.cfg.Logger
	}
	return &Janitor{s: s, cfg: cfg}, nil
}

// Stats returns the janitor's counters.
func (j *Janitor) Stats() JanitorStats {
	st := JanitorStats{
		Deleted: Swept{Dedup: j.dedup.Load(), Attempts: j.attempt.Load(), DeadLetters: j.dead.Load()},
		Passes:  j.passes.Load(),
		Errors:  j.errs.Load(),
	}
	if ns := j.lastEnd.Load(); ns != 0 {
		st.LastPassEnd = time.Unix(0, ns)
	}
	return st
}

// Pass runs one pass: it deletes every row past retention (Store.Sweep),
// pausing BatchPause between batches, and returns what it deleted.
func (j *Janitor) Pass(ctx context.Context) (Swept, error) {
	w, err := j.s.sweepAll(ctx, j.pause)
	j.dedup.Add(w.Dedup)
	j.attempt.Add(w.Attempts)
	j.dead.Add(w.DeadLetters)
	if err != nil {
		if ctx.Err() == nil {
			j.errs.Add(1)
		}
		return w, err
	}
	j.passes.Add(1)
	j.lastEnd.Store(time.Now().UnixNano())
	return w, nil
}

func (j *Janitor) pause(ctx context.Context, batch int64, took time.Duration) error {
	d := j.cfg.BatchPause
	if j.cfg.MaxRate > 0 {
		d = max(d, time.Duration(batch)*time.Second/time.Duration(j.cfg.MaxRate)-took)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run runs a pass at once and then every Interval until ctx is done, and
// returns nil. A failed pass is logged and the next one runs after
// Interval; what a failed or cut-short pass left is deleted by the next.
func (j *Janitor) Run(ctx context.Context) error {
	for {
		if _, err := j.Pass(ctx); err != nil && ctx.Err() == nil {
			j.cfg.Logger.Error("sqldedup: janitor: cleanup pass failed", "prefix", j.s.prefix, "err", err)
		}
		t := time.NewTimer(j.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Backlog is what a store holds past its retention, read by Store.Backlog.
type Backlog struct {
	// Expired is the number of done keys past retention, counted up to
	// ExpiredLimit.
	Expired int64
	// OldestDoneAge is the age of the oldest done key by the database
	// clock (zero when there is none).
	OldestDoneAge time.Duration
}

// ExpiredLimit is the most expired rows Store.Backlog counts, so that
// reading the backlog stays cheap however far behind cleanup is.
const ExpiredLimit = 100000

// Backlog reads, through the index cleanup uses, how many done keys are
// past retention (up to ExpiredLimit) and how old the oldest done key is,
// by the database clock. A store whose cleanup keeps up has an oldest done
// key about as old as its retention, plus the janitor's interval.
func (s *Store) Backlog(ctx context.Context) (Backlog, error) {
	var b Backlog
	now, err := s.now(ctx, s.db)
	if err != nil {
		return b, err
	}
	t := s.prefix + "dedup"
	db := s.db.WithContext(ctx)
	var oldest []int64
	if err := db.Raw("SELECT created_at FROM " + t + " WHERE status = 2 ORDER BY created_at LIMIT 1").Scan(&oldest).Error; err != nil {
		return b, fmt.Errorf("sqldedup: backlog: %w", err)
	}
	if len(oldest) == 0 {
		return b, nil
	}
	b.OldestDoneAge = max(0, msDuration(now-oldest[0]))
	cutoff := now - s.cfg.Retention.Keep.Milliseconds()
	if err := db.Raw("SELECT COUNT(*) FROM (SELECT 1 AS x FROM "+t+" WHERE status = 2 AND created_at < ? ORDER BY created_at LIMIT ?) e",
		cutoff, ExpiredLimit).Scan(&b.Expired).Error; err != nil {
		return b, fmt.Errorf("sqldedup: backlog: %w", err)
	}
	return b, nil
}
