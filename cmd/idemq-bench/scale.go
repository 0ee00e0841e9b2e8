package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/benchwork"
)

// scaleKeep is the scale mode's retention: the pre-filled rows are spread
// over twice this span, so that half of them are past retention.
const scaleKeep = time.Hour

// scaleMain measures the dedup table at scale: it pre-fills the table to
// -rows done rows with set-based SQL, half of them past retention, and
// prints, per database, Process msgs/s (bare and dedup) on an empty table
// and at N rows, the dedup insert without the cleanup index at N, Process
// while the janitor deletes expired rows, cleanup rows/s of the old
// primary-key walk and of the time-index cleanup, bytes per row, and WAL
// (PostgreSQL) or redo (InnoDB) bytes per message. The tables are dropped
// at the end.
func scaleMain(args []string) {
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	dbs := fs.String("db", "postgres,mysql", "databases to measure")
	rows := fs.Int64("rows", 1000000, "dedup rows to pre-fill")
	c := fs.Int("c", 8, "concurrency of Process")
	d := fs.Duration("d", 10*time.Second, "duration of each Process measurement")
	cleanFor := fs.Duration("clean", 20*time.Second, "longest time each cleanup algorithm runs")
	noIndexCase := fs.Bool("noindex", true, "measure the insert without the cleanup index (drops and rebuilds it: on a large InnoDB table the rebuild's background writes weigh on the cases after it)")
	_ = fs.Parse(args)
	log.SetFlags(0)
	host, _ := os.Hostname()
	fmt.Printf("idemq-bench scale: %d cores, host %s, c=%d, %s per case, %d rows (half past a %s retention)\n",
		runtime.NumCPU(), host, *c, *d, *rows, scaleKeep)
	fmt.Printf("load average at start: %s\n\n", loadavg())
	for _, name := range strings.Split(*dbs, ",") {
		name = strings.TrimSpace(name)
		db, err := open(name)
		if err != nil {
			fmt.Printf("%-9s skipped: %v\n", name, err)
			continue
		}
		if err := scaleRun(db, name, *rows, *c, *d, *cleanFor, *noIndexCase); err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		fmt.Printf("load average now: %s\n\n", loadavg())
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// logBytes returns the bytes the database has written to its WAL or redo
// log so far (the whole server: other sessions' writes count too).
func logBytes(db *gorm.DB) (int64, error) {
	var n int64
	var err error
	switch db.Dialector.Name() {
	case "postgres":
		err = db.Raw("SELECT CAST(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS BIGINT)").Scan(&n).Error
	case "mysql":
		var row struct {
			VariableName string
			Value        int64
		}
		err = db.Raw("SHOW GLOBAL STATUS LIKE 'Innodb_os_log_written'").Scan(&row).Error
		n = row.Value
	}
	return n, err
}

// tableBytes returns the size of a table with its indexes.
func tableBytes(db *gorm.DB, table string) (int64, error) {
	var n int64
	var err error
	switch db.Dialector.Name() {
	case "postgres":
		if err = db.Exec("VACUUM ANALYZE " + table).Error; err == nil {
			err = db.Raw("SELECT pg_total_relation_size(CAST(? AS regclass))", table).Scan(&n).Error
		}
	case "mysql":
		if err = db.Exec("ANALYZE TABLE " + table).Error; err == nil {
			err = db.Raw("SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", table).Scan(&n).Error
		}
	case "sqlite":
		// The whole file: the dedup table is nearly all of it.
		err = db.Raw("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").Scan(&n).Error
	}
	return n, err
}

// measured is one Process measurement.
type measured struct {
	rate   float64 // msgs/s
	logPer float64 // WAL/redo bytes per message
}

func (m measured) String() string {
	return fmt.Sprintf("%8.0f msgs/s %6.0f B log/msg", m.rate, m.logPer)
}

func scaleRun(db *gorm.DB, name string, rows int64, c int, d, cleanFor time.Duration, noIndexCase bool) error {
	ctx := context.Background()
	prefix := "scale_"
	tables := []string{"dedup", "attempts", "dead_letters", "schema_migrations"}
	drop := func() {
		for _, t := range tables {
			_ = db.Exec("DROP TABLE IF EXISTS " + prefix + t).Error
		}
		_ = db.Exec("DROP TABLE IF EXISTS " + prefix + "payouts").Error
		_ = db.Exec("DROP TABLE IF EXISTS " + prefix + "wallets").Error
		_ = db.Exec("DROP TABLE IF EXISTS " + prefix + "claims").Error
	}
	drop()
	defer drop()
	w, err := benchwork.Setup(ctx, db, prefix)
	if err != nil {
		return err
	}
	store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix,
		Retention: dedup.Retention{Keep: scaleKeep, RetryHorizon: time.Minute, RedriveWindow: time.Minute}})
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	table := store.Table("dedup")
	// New keys sort after every pre-filled one (benchwork.KeyBase + i), as
	// snowflake IDs do; each measurement takes its own range.
	const newKeys = 1900000000000000000
	var next int64
	measure := func(op func(ctx context.Context, key string) error) (measured, error) {
		before, err := logBytes(db)
		if err != nil {
			return measured{}, err
		}
		start := next
		rate, err := benchwork.Measure(ctx, c, d, 1, func(ctx context.Context, seq int64) error {
			return op(ctx, fmt.Sprintf("%d", newKeys+start+seq))
		})
		next += 1000000000
		if err != nil {
			return measured{}, err
		}
		after, err := logBytes(db)
		if err != nil {
			return measured{}, err
		}
		msgs := rate * d.Seconds()
		return measured{rate: rate, logPer: float64(after-before) / msgs}, nil
	}
	bare := func(ctx context.Context, key string) error { return w.Bare(ctx, key) }
	dedupOp := func(ctx context.Context, key string) error {
		out, err := w.Dedup(ctx, store, "bench", key)
		if err == nil && out != dedup.Processed {
			err = fmt.Errorf("fresh key %s answered %s", key, out)
		}
		return err
	}
	fmt.Printf("== %s\n", name)
	emptyA, err := measure(bare)
	if err != nil {
		return err
	}
	emptyB, err := measure(dedupOp)
	if err != nil {
		return err
	}
	fmt.Printf("empty table     a bare  %s\n", emptyA)
	fmt.Printf("empty table     b dedup %s   b/a %.2f\n", emptyB, emptyB.rate/emptyA.rate)

	// Pre-fill: the rows of a service that ran for 2 x retention, oldest
	// first, keys ascending with time.
	if err := db.Exec("DELETE FROM " + table).Error; err != nil {
		return err
	}
	now, err := store.Now(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := benchwork.FillDedup(ctx, db, table, "bench", 0, rows, now.Add(-2*scaleKeep).UnixMilli(), now.Add(-time.Minute).UnixMilli()); err != nil {
		return err
	}
	fill := time.Since(t0)
	size, err := tableBytes(db, table)
	if err != nil {
		return err
	}
	if name == "postgres" {
		// Write out what the fill dirtied now, rather than in a checkpoint
		// during the next case (it needs superuser or pg_checkpoint: a
		// user without either measures without it).
		_ = db.Exec("CHECKPOINT").Error
	}
	fmt.Printf("fill            %d rows in %s (%.0f rows/s); %d MB with indexes, %.0f bytes/row\n",
		rows, fill.Round(time.Second), float64(rows)/fill.Seconds(), size>>20, float64(size)/float64(rows))

	atA, err := measure(bare)
	if err != nil {
		return err
	}
	atB, err := measure(dedupOp)
	if err != nil {
		return err
	}
	fmt.Printf("at N            a bare  %s\n", atA)
	fmt.Printf("at N            b dedup %s   b/a %.2f   vs empty b %.2f\n", atB, atB.rate/atA.rate, atB.rate/emptyB.rate)

	if noIndexCase {
		if err := measureWithoutIndex(db, name, store, table, atB, func() (measured, error) { return measure(dedupOp) }); err != nil {
			return err
		}
	}

	// Process while a janitor deletes expired rows: one that keeps pace
	// with the inserts (MaxRate = the insert rate at N, the steady state
	// of a janitor that keeps up), alternating with none, twice; then one
	// that catches up with the backlog as fast as its defaults let it
	// (batches of 500, 10ms pause).
	during := func(cfg sqldedup.JanitorConfig) (measured, int64, time.Duration, error) {
		cfg.Interval = time.Hour
		jan, err := sqldedup.NewJanitor(store, cfg)
		if err != nil {
			return measured{}, 0, 0, err
		}
		jctx, stop := context.WithCancel(ctx)
		jdone := make(chan struct{})
		go func() { _ = jan.Run(jctx); close(jdone) }()
		t0 := time.Now()
		m, err := measure(dedupOp)
		took := time.Since(t0)
		stop()
		<-jdone
		return m, jan.Stats().Deleted.Dedup, took, err
	}
	var ratios []float64
	for round := 0; round < 2; round++ {
		without, err := measure(dedupOp)
		if err != nil {
			return err
		}
		paced, n, took, err := during(sqldedup.JanitorConfig{MaxRate: int(atB.rate)})
		if err != nil {
			return err
		}
		ratios = append(ratios, paced.rate/without.rate)
		fmt.Printf("keeping pace    b dedup %s   without %s   ratio %.2f   (janitor deleted %d rows, %.0f rows/s)\n",
			paced, without, paced.rate/without.rate, n, float64(n)/took.Seconds())
	}
	catchUp, n, took, err := during(sqldedup.JanitorConfig{})
	if err != nil {
		return err
	}
	fmt.Printf("catching up     b dedup %s   vs at N %.2f   (janitor deleted %d rows, %.0f rows/s)\n",
		catchUp, catchUp.rate/atB.rate, n, float64(n)/took.Seconds())
	fmt.Printf("process during cleanup keeping pace / without: %.2f (mean of %d rounds)\n", (ratios[0]+ratios[1])/2, len(ratios))

	// The two cleanup algorithms, alone, on what is left.
	oldN, oldT, err := oldCleanup(ctx, db, table, now.Add(-scaleKeep).UnixMilli(), cleanFor)
	if err != nil {
		return err
	}
	fmt.Printf("cleanup old     primary-key walk   %8.0f rows/s (%d rows in %s)\n", float64(oldN)/oldT.Seconds(), oldN, oldT.Round(100*time.Millisecond))
	cctx, cancel := context.WithTimeout(ctx, cleanFor)
	t0 = time.Now()
	newN, err := store.Cleanup(cctx)
	newT := time.Since(t0)
	cancel()
	if err != nil && cctx.Err() == nil {
		return err
	}
	fmt.Printf("cleanup new     time index         %8.0f rows/s (%d rows in %s)\n", float64(newN)/newT.Seconds(), newN, newT.Round(100*time.Millisecond))
	return nil
}

// oldCleanup is the cleanup idemq shipped before the time index: walk the
// primary key (consumer group, key) in windows of 500 keys and delete the
// expired done rows of each window. It runs for at most limit and returns
// the rows deleted and the time taken.
func oldCleanup(ctx context.Context, db *gorm.DB, table string, cutoff int64, limit time.Duration) (int64, time.Duration, error) {
	type keyRow struct {
		ConsumerGroup string
		DedupKey      string
	}
	window := "SELECT consumer_group, dedup_key FROM " + table + " WHERE (consumer_group, dedup_key) > (?, ?) ORDER BY consumer_group, dedup_key LIMIT ?"
	del := "DELETE FROM " + table + " WHERE (consumer_group, dedup_key) > (?, ?) AND (consumer_group, dedup_key) <= (?, ?) AND status = 2 AND created_at < ?"
	start := time.Now()
	var deleted int64
	var after keyRow
	for time.Since(start) < limit {
		var keys []keyRow
		if err := db.WithContext(ctx).Raw(window, after.ConsumerGroup, after.DedupKey, 500).Scan(&keys).Error; err != nil {
			return deleted, time.Since(start), err
		}
		if len(keys) == 0 {
			break
		}
		last := keys[len(keys)-1]
		r := db.WithContext(ctx).Exec(del, after.ConsumerGroup, after.DedupKey, last.ConsumerGroup, last.DedupKey, cutoff)
		if r.Error != nil {
			return deleted, time.Since(start), r.Error
		}
		deleted += r.RowsAffected
		after = last
	}
	return deleted, time.Since(start), nil
}

// measureWithoutIndex measures the dedup case at N without the cleanup
// index (what the index costs the insert), then rebuilds the index.
func measureWithoutIndex(db *gorm.DB, name string, store *sqldedup.Store, table string, atB measured, measureDedup func() (measured, error)) error {
	idx, create := store.Table("dedup_done_created"), "CREATE INDEX "+store.Table("dedup_done_created")+" ON "+table+" (created_at) WHERE status = 2"
	dropIdx := "DROP INDEX " + idx
	switch name {
	case "mysql":
		idx = store.Table("dedup_status_created")
		create = "ALTER TABLE " + table + " ADD KEY " + idx + " (status, created_at)"
		dropIdx = "ALTER TABLE " + table + " DROP KEY " + idx
	}
	if err := db.Exec(dropIdx).Error; err != nil {
		return err
	}
	noIdx, err := measureDedup()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := db.Exec(create).Error; err != nil {
		return err
	}
	fmt.Printf("at N, no index  b dedup %s   with index / without %.2f   (index rebuilt in %s)\n",
		noIdx, atB.rate/noIdx.rate, time.Since(t0).Round(100*time.Millisecond))

	return nil
}
