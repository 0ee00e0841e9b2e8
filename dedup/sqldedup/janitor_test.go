package sqldedup_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestJanitorKeepsRetentionUnderLoad runs a janitor beside a steady load
// of new keys for three times the retention, and checks, by the database
// clock, that the oldest done key never gets much older than the retention
// (without the janitor it would be as old as the run), that the rows it
// deleted were all past retention, and that its metrics say so.
func TestJanitorKeepsRetentionUnderLoad(t *testing.T) {
	const (
		keep     = 1500 * time.Millisecond
		interval = 100 * time.Millisecond
		run      = 3 * keep
		// slack covers a pass and a loaded machine's scheduling.
		slack = time.Second
	)
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			if d.Dialect == "sqlite" {
				// One connection, as sqlitedb.Open sets it: writers queue in
				// Go, not in SQLite's sleeping busy handler, where the
				// janitor's batches would lose to the load's transactions.
				sqlDB, err := db.DB()
				if err != nil {
					t.Fatal(err)
				}
				sqlDB.SetMaxOpenConns(1)
			}
			s := newStore(t, db, sqldedup.Config{
				Retention:    dedup.Retention{Keep: keep, RetryHorizon: time.Millisecond, RedriveWindow: time.Millisecond},
				CleanupBatch: 20,
			})
			j, err := sqldedup.NewJanitor(s, sqldedup.JanitorConfig{Interval: interval, BatchPause: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewPedanticRegistry()
			if err := j.RegisterMetrics(reg, sqldedup.JanitorMetricsConfig{}); err != nil {
				t.Fatal(err)
			}
			jctx, stopJanitor := context.WithCancel(ctx)
			jdone := make(chan error, 1)
			go func() { jdone <- j.Run(jctx) }()

			// The load: two producers of new keys, about 200 a second in
			// all. startedAt is when each key's Process was called: its row's
			// created_at is no earlier (the servers run on this host's clock).
			var mu sync.Mutex
			startedAt := map[string]time.Time{}
			lctx, stopLoad := context.WithTimeout(ctx, run)
			defer stopLoad()
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tick := time.NewTicker(10 * time.Millisecond)
					defer tick.Stop()
					for i := 0; lctx.Err() == nil; i++ {
						key := fmt.Sprintf("w%d-%06d", w, i)
						began := time.Now()
						res, err := s.Process(ctx, dedup.Request{Group: "g", Key: key, MessageID: key}, func(context.Context) error { return nil })
						if err != nil || res.Outcome != dedup.Processed {
							t.Errorf("process %s: %v %v", key, res, err)
							return
						}
						mu.Lock()
						startedAt[key] = began
						mu.Unlock()
						select {
						case <-lctx.Done():
						case <-tick.C:
						}
					}
				}()
			}
			// Sample the oldest done key's age while the load runs.
			var worst time.Duration
			var samples int
			start := time.Now()
			for time.Since(start) < run {
				time.Sleep(100 * time.Millisecond)
				if time.Since(start) < keep {
					continue
				}
				b, err := s.Backlog(ctx)
				if err != nil {
					t.Fatal(err)
				}
				samples++
				worst = max(worst, b.OldestDoneAge)
			}
			wg.Wait()
			stopJanitor()
			if err := <-jdone; err != nil {
				t.Fatalf("Run: %v", err)
			}
			st := j.Stats()
			if st.Deleted.Dedup == 0 || st.Passes < 3 {
				t.Fatalf("janitor deleted %d rows in %d passes; want some, in 3 or more", st.Deleted.Dedup, st.Passes)
			}
			if samples == 0 || worst > keep+interval+slack {
				t.Errorf("oldest done key reached %s over %d samples; want at most retention %s + interval %s + %s",
					worst, samples, keep, interval, slack)
			}
			// Every key missing now was done before the retention began.
			now, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			if err := db.Raw("SELECT dedup_key FROM " + s.Table("dedup")).Scan(&left).Error; err != nil {
				t.Fatal(err)
			}
			present := map[string]bool{}
			for _, k := range left {
				present[k] = true
			}
			missing := 0
			for k, at := range startedAt {
				if present[k] {
					continue
				}
				missing++
				if at.After(now.Add(-keep + time.Millisecond)) {
					t.Errorf("key %s started %s ago was deleted inside the retention %s", k, now.Sub(at), keep)
				}
			}
			if int64(missing) != st.Deleted.Dedup {
				t.Errorf("%d keys missing, janitor says it deleted %d", missing, st.Deleted.Dedup)
			}
			// The metrics report the same.
			if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP idemq_dedup_cleanup_deleted_rows_total Rows deleted because they were past retention, by table (dedup, attempts, dead_letters).
# TYPE idemq_dedup_cleanup_deleted_rows_total counter
idemq_dedup_cleanup_deleted_rows_total{table="attempts"} 0
idemq_dedup_cleanup_deleted_rows_total{table="dead_letters"} 0
idemq_dedup_cleanup_deleted_rows_total{table="dedup"} %d
# HELP idemq_dedup_cleanup_retention_seconds How long done dedup keys are kept (Retention.Keep).
# TYPE idemq_dedup_cleanup_retention_seconds gauge
idemq_dedup_cleanup_retention_seconds 1.5
`, st.Deleted.Dedup)), "idemq_dedup_cleanup_deleted_rows_total", "idemq_dedup_cleanup_retention_seconds"); err != nil {
				t.Error(err)
			}
			if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %+v", err, problems)
			}
		})
	}
}

// TestJanitorMaxRateCapsDeletes fills a table with expired done keys and
// checks that a pass with MaxRate set deletes them all, no faster than the
// cap: the pause after each batch is stretched to keep under it.
func TestJanitorMaxRateCapsDeletes(t *testing.T) {
	const (
		rows    = 1000
		batch   = 50
		maxRate = 500 // rows per second: the pass must take about 2 s
	)
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{CleanupBatch: batch})
			now, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			expired := now.Add(-s.Retention().Keep - time.Hour).UnixMilli()
			for i := 0; i < rows; i += 100 {
				var vals []string
				var args []any
				for k := i; k < i+100; k++ {
					vals = append(vals, "('g', ?, 2, ?, ?)")
					args = append(args, fmt.Sprintf("old-%05d", k), expired, expired)
				}
				if err := db.Exec("INSERT INTO "+s.Table("dedup")+" (consumer_group, dedup_key, status, created_at, updated_at) VALUES "+
					strings.Join(vals, ", "), args...).Error; err != nil {
					t.Fatal(err)
				}
			}
			j, err := sqldedup.NewJanitor(s, sqldedup.JanitorConfig{MaxRate: maxRate, BatchPause: -1})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			w, err := j.Pass(ctx)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if w.Dedup != rows {
				t.Fatalf("pass deleted %d rows, want %d", w.Dedup, rows)
			}
			// The last batch needs no pause after it: (rows-batch)/maxRate.
			if floor := time.Duration(rows-batch) * time.Second / maxRate; took < floor {
				t.Errorf("pass deleted %d rows in %s: %.0f rows/s, above MaxRate %d (want at least %s)",
					rows, took, float64(rows)/took.Seconds(), maxRate, floor)
			}
		})
	}
}
