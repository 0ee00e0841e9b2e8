// Command idemq-bench measures the cost of idemq's dedup against the bare
// business transaction it protects, on SQLite, PostgreSQL and MySQL/MariaDB,
// at several concurrencies, and prints msgs/s with the ratio of each case to
// the baseline measured in the same run.
//
// Cases, per database and concurrency:
//
//	a  bare       the business transaction alone (credit a wallet, write a payout row),
//	              begun the ordinary way: gorm's BEGIN is a round trip of its own
//	a' bare1      the same transaction with BEGIN sent together with its first
//	              statement in one round trip, as dedup's fast begin does; the
//	              honest baseline (b/a' is the cost of dedup alone)
//	b  dedup      the same transaction behind transactional dedup (sqldedup)
//	c  batch32    32 messages per transaction with one multi-row dedup insert
//	d  dup-db     rejecting a duplicate through the database (CheckDoneFirst)
//	e  dup-redis  rejecting a duplicate through the Redis fast path (markers
//	              written in the background: MarkerQueue)
//	f  fast       fresh messages through the Redis fast path (fast/b: its cost
//	              over transactional dedup)
//	g  lease      lease mode (sqldedup.Lease) around the same business
//	              transaction run as the handler's own (claim, the
//	              transaction, mark done): lease/a is its cost
//	h  rlease     the same under redisdedup's Redis-only lease store:
//	              rlease/a is its cost
//	i  dup-tx     rejecting a duplicate through the transactional path alone
//	              (BEGIN, insert, read, rollback: the default store), the
//	              baseline of d (d/i: what CheckDoneFirst buys)
//
// Three more cases are floors: the least any design with the same round
// trips could cost, so that the ratio to them shows what idemq adds over
// what its design cannot avoid.
//
//	j  a'+trip    a' with one more round trip inside the transaction (a
//	              SELECT 1): as many round trips as b, whose dedup insert
//	              must be answered before the handler runs; b/j is the cost
//	              of the insert's own work
//	k  b+get      a Redis GET of a missing key, then b: the fast path's
//	              lookup and nothing else of it; f/k is the cost of the
//	              rest of the fast path
//	l  hand-lease a hand-written lease: a plain claim INSERT, the
//	              transaction, a plain mark UPDATE, on a narrow table of its
//	              own (no fencing token, renewal, takeover or expiry); g/l is
//	              the cost of what lease mode adds to its two statements
//
// The last lines are one summary per database at c=8 (or the last
// concurrency measured): b/a, b/a', dupdb and dupredis msgs/s, dupdb/duptx
// (d/i), fast/b, lease/a and rlease/a, then the ratios to the floors: b/j,
// fast/k (f/k) and lease/l (g/l).
//
// Usage:
//
//	idemq-bench [-db sqlite,postgres,mysql] [-c 1,8,32] [-d 3s] [-rounds 5] [-cases abcdefghijkl] [-maxidle 64] [-cpuprofile file]
//	idemq-bench pipeline [-db sqlite] [-n 5000] [-c 8]
//	idemq-bench outbox [-db sqlite,postgres,mysql] [-n 5000] [-rounds 5] [-d 2s] [-cases raw,seq,relay1,relay4] [-cpuprofile file]
//	idemq-bench scale [-db postgres,mysql] [-rows 1000000] [-c 8] [-d 10s] [-clean 20s] [-noindex=false]
//
// Each round runs every case once, a, a' and b in alternating order; msgs/s is
// the median over rounds, and each ratio the median of the ratios taken
// within one round, so that a slow stretch of a shared machine weighs on
// both sides of a ratio alike. The first tenth of each case (at most one
// second) is an uncounted warm-up.
//
// The pipeline mode measures the whole path (producer, in-process test
// broker, consumer, dedup, handler) with and without dedup; the outbox mode
// measures the relay (rows/s from commit to broker confirm) against the raw
// send rate of the producer to the same broker. Each prints its ratios.
//
// The scale mode pre-fills the dedup table to -rows done rows with
// set-based SQL (half of them past a one-hour retention, keys ascending
// with time as snowflake IDs do) and prints, per database: Process msgs/s
// (bare and dedup) on an empty table and at N rows, the dedup case at N
// without the cleanup index (what the index costs the insert), Process
// while the janitor deletes expired rows, cleanup rows/s of the old
// primary-key walk and of the time-index cleanup in the same run, bytes
// per row with indexes, and WAL (PostgreSQL) or redo (InnoDB) bytes per
// message. The log figures are the server's: other sessions' writes count
// too. Its tables are dropped at the end (docs/capacity.md has figures).
//
// PostgreSQL, MySQL and Redis are reached through IDEMQ_POSTGRES_DSN,
// IDEMQ_MYSQL_DSN and IDEMQ_REDIS_ADDR (scripts/test sets them); a database
// whose variable is unset is skipped with a note. The MySQL DSN gets
// multiStatements=true if it lacks it, so that sqldedup saves the BEGIN
// round trip there as it does on PostgreSQL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/benchwork"
	"github.com/idemq/idemq/internal/dbopen"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "pipeline":
			pipelineMain(os.Args[2:])
			return
		case "outbox":
			outboxMain(os.Args[2:])
			return
		case "scale":
			scaleMain(os.Args[2:])
			return
		}
	}
	dbs := flag.String("db", "sqlite,postgres,mysql", "databases to measure")
	conc := flag.String("c", "1,8,32", "concurrencies")
	dur := flag.Duration("d", 3*time.Second, "duration of each case")
	rounds := flag.Int("rounds", 5, "rounds (the median msgs/s and the median within-round ratio are reported)")
	only := flag.String("cases", "abcdefghijkl", "cases to run (letters a to l); a and a' are always run")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	maxIdle := flag.Int("maxidle", 64, "idle connections the pool keeps (PostgreSQL, MySQL); 2 is database/sql's default")
	flag.Parse()
	log.SetFlags(0)
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		defer stop()
	}

	var cs []int
	for _, f := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			log.Fatalf("bad concurrency %q", f)
		}
		cs = append(cs, n)
	}
	want := map[string]bool{"a": true, "a'": true}
	for _, r := range *only {
		if r < 'a' || r > 'l' {
			log.Fatalf("bad case %q in -cases (want letters a to l)", r)
		}
		want[string(r)] = true
	}
	var rdb *redis.Client
	if addr := os.Getenv("IDEMQ_REDIS_ADDR"); addr != "" {
		rdb = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64, ContextTimeoutEnabled: true})
		defer rdb.Close()
	}
	host, _ := os.Hostname()
	fmt.Printf("idemq-bench: %d cores, host %s, load %s, %s per case, median of %d\n\n", runtime.NumCPU(), host, loadAvg(), *dur, *rounds)
	fmt.Printf("%-9s %3s %9s %9s %9s %6s %6s %9s %6s %6s %9s %6s %9s %6s %7s %9s %6s %9s %6s %9s %6s %9s %6s %9s %6s %9s %6s %9s %6s\n",
		"db", "c", "a bare", "a' bare1", "b dedup", "b/a", "b/a'", "c batch", "c/a", "c/b", "d dupdb", "d/a", "e dupredis", "e/a", "e/d", "f fast", "f/b",
		"g lease", "g/a", "h rlease", "h/a", "i duptx", "d/i", "j a'+trip", "b/j", "k b+get", "f/k", "l hand", "g/l")
	var spread, summary []string
	for _, name := range strings.Split(*dbs, ",") {
		db, err := open(strings.TrimSpace(name))
		if err != nil {
			fmt.Printf("%-9s skipped: %v\n", name, err)
			continue
		}
		if sqlDB, err := db.DB(); err == nil && db.Dialector.Name() != "sqlite" {
			sqlDB.SetMaxIdleConns(*maxIdle)
		}
		for _, c := range cs {
			r, err := run(db, c, *dur, *rounds, rdb, want)
			if err != nil {
				log.Fatalf("%s c=%d: %v", name, c, err)
			}
			fmt.Printf("%-9s %3d %9s %9s %9s %6s %6s %9s %6s %6s %9s %6s %9s %6s %7s %9s %6s %9s %6s %9s %6s %9s %6s %9s %6s %9s %6s %9s %6s\n", name, c,
				r.rate("a"), r.rate("a'"), r.rate("b"), r.ratio("b", "a", ""), r.ratio("b", "a'", ""),
				r.rate("c"), r.ratio("c", "a", ""), r.ratio("c", "b", "x"),
				r.rate("d"), r.ratio("d", "a", ""), r.rate("e"), r.ratio("e", "a", ""), r.ratio("e", "d", "x"),
				r.rate("f"), r.ratio("f", "b", ""),
				r.rate("g"), r.ratio("g", "a", ""), r.rate("h"), r.ratio("h", "a", ""), r.rate("i"), r.ratio("d", "i", "x"),
				r.rate("j"), r.ratio("b", "j", ""), r.rate("k"), r.ratio("f", "k", ""), r.rate("l"), r.ratio("g", "l", ""))
			if *rounds > 1 {
				spread = append(spread, fmt.Sprintf("%-9s %3d  b/a  %s\n%-9s %3d  b/a' %s", name, c, r.rounds("b", "a"), name, c, r.rounds("b", "a'")))
			}
			if c == 8 || (c == cs[len(cs)-1] && !slices.Contains(cs, 8)) {
				summary = append(summary, fmt.Sprintf("summary %s c=%d: b/a=%s b/a'=%s dupdb=%s/s dupredis=%s/s dupdb/duptx=%s fast/b=%s lease/a=%s rlease/a=%s b/j=%s fast/k=%s lease/l=%s",
					name, c, r.ratio("b", "a", ""), r.ratio("b", "a'", ""), r.rate("d"), r.rate("e"), r.ratio("d", "i", ""), r.ratio("f", "b", ""),
					r.ratio("g", "a", ""), r.ratio("h", "a", ""), r.ratio("b", "j", ""), r.ratio("f", "k", ""), r.ratio("g", "l", "")))
			}
		}
	}
	defer func() {
		for _, l := range summary {
			fmt.Println(l)
		}
	}()
	if len(spread) > 0 {
		fmt.Printf("\nb/a and b/a' of each round (a, a' and b measured back to back):\n")
		for _, l := range spread {
			fmt.Println(l)
		}
	}
}

// rounds lists case x's msgs/s divided by case y's, round by round.
func (r result) rounds(x, y string) string {
	if len(r[x]) == 0 || len(r[x]) != len(r[y]) {
		return "-"
	}
	parts := make([]string, len(r[x]))
	for i := range parts {
		parts[i] = fmt.Sprintf("%.2f", r[x][i]/r[y][i])
	}
	return strings.Join(parts, " ")
}

// result holds each case's msgs/s of every round.
type result map[string][]float64

// rate is the median msgs/s of case k, or "-" if it was not run.
func (r result) rate(k string) string {
	if len(r[k]) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", median(r[k]))
}

// ratio is the median over rounds of case x's msgs/s divided by case y's in
// the same round, or "-" if either was not run.
func (r result) ratio(x, y, suffix string) string {
	if len(r[x]) == 0 || len(r[x]) != len(r[y]) {
		return "-"
	}
	q := make([]float64, len(r[x]))
	for i := range q {
		q[i] = r[x][i] / r[y][i]
	}
	if suffix == "x" {
		return fmt.Sprintf("%.1fx", median(q))
	}
	return fmt.Sprintf("%.2f", median(q))
}

// open opens a database to measure; PostgreSQL and MySQL come from
// IDEMQ_POSTGRES_DSN and IDEMQ_MYSQL_DSN.
func open(name string) (*gorm.DB, error) {
	dsn := ""
	switch name {
	case "postgres", "mysql":
		env := map[string]string{"postgres": "IDEMQ_POSTGRES_DSN", "mysql": "IDEMQ_MYSQL_DSN"}[name]
		if dsn = os.Getenv(env); dsn == "" {
			return nil, fmt.Errorf("%s not set", env)
		}
	}
	db, _, err := dbopen.Open(name, dsn)
	return db, err
}

// median is the middle value of xs (the upper middle for an even count);
// xs is not modified.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func run(db *gorm.DB, c int, d time.Duration, rounds int, rdb *redis.Client, want map[string]bool) (result, error) {
	ctx := context.Background()
	// The process id keeps two runs on one shared database apart; the
	// tables are dropped when the run ends.
	prefix := fmt.Sprintf("bench%d_%d_", c, os.Getpid())
	w, err := benchwork.Setup(ctx, db, prefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, t := range []string{"dedup", "attempts", "dead_letters"} {
			db.Exec("DROP TABLE IF EXISTS " + prefix + t)
		}
		w.Drop(ctx)
	}()
	for _, t := range []string{"dedup", "attempts", "dead_letters"} {
		if err := db.Exec("DROP TABLE IF EXISTS " + prefix + t).Error; err != nil {
			return nil, err
		}
	}
	store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx); err != nil {
		return nil, err
	}
	// Duplicates are rejected through a store that reads the row before
	// opening a transaction (CheckDoneFirst), on the same tables.
	dupStore, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix, CheckDoneFirst: true})
	if err != nil {
		return nil, err
	}
	// Lease mode on the same tables: the claim, the handler's own
	// transaction, the mark.
	leaseStore, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix, Mode: sqldedup.Lease})
	if err != nil {
		return nil, err
	}
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	// Keys grow with the sequence, as snowflake message IDs (the default
	// dedup key) grow with time.
	key := func(kind string, seq int64) string { return fmt.Sprintf("%s:%s:%012d", kind, run, seq) }

	// Keys that are already done, for the duplicate cases.
	const pool = 2048
	dupKeys := make([]string, pool)
	for i := range dupKeys {
		dupKeys[i] = key("dup", int64(i))
	}
	for i := 0; i < pool; i += 256 {
		if err := w.Batch(ctx, store, "bench", dupKeys[i:i+256]); err != nil {
			return nil, err
		}
	}
	var rlease *redisdedup.LeaseStore
	var fast *redisdedup.FastPath
	fastKeys := make([]string, pool)
	if rdb != nil {
		// A timeout of a second rather than the default 100 ms: on a loaded
		// shared machine a Redis call can stall past 100 ms, and a fallback
		// to the database would be measured as the fast path.
		fast, err = redisdedup.NewFastPath(store, rdb, redisdedup.FastPathConfig{KeyPrefix: "idemqbench:" + run + ":", MarkerQueue: 4096, Timeout: time.Second})
		if err != nil {
			return nil, err
		}
		// Only a delivery the fast path itself processed writes a marker
		// (a Duplicate answer never does), so its keys are done through it.
		for i := range fastKeys {
			fastKeys[i] = key("fast", int64(i))
			if _, err := fast.Process(ctx, dedup.Request{Group: "bench", Key: fastKeys[i]}, noop); err != nil {
				return nil, err
			}
		}
		if err := fast.Flush(ctx); err != nil {
			return nil, err
		}
		defer fast.Close(ctx)
		rlease, err = redisdedup.NewLeaseStore(rdb, redisdedup.LeaseConfig{KeyPrefix: "idemqbench:" + run + ":lease:"})
		if err != nil {
			return nil, err
		}
	}
	leased := func(s dedup.Store, kind string, round int) func(context.Context, int64) error {
		return func(ctx context.Context, seq int64) error {
			k := key(fmt.Sprintf("%s%d", kind, round), seq)
			res, err := s.Process(ctx, dedup.Request{Group: "bench", Key: k, MessageID: k}, func(ctx context.Context) error {
				return w.Bare(ctx, k)
			})
			if err == nil && res.Outcome != dedup.Processed {
				err = fmt.Errorf("fresh key answered %s", res.Outcome)
			}
			return err
		}
	}

	cases := []struct {
		name  string
		perOp int
		op    func(round int) func(ctx context.Context, seq int64) error
	}{
		{"a", 1, func(int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error { return w.Bare(ctx, key("bare", seq)) }
		}},
		{"a'", 1, func(int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error { return w.BareOneTrip(ctx, key("bare1", seq)) }
		}},
		{"b", 1, func(round int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				out, err := w.Dedup(ctx, store, "bench", key(fmt.Sprintf("dedup%d", round), seq))
				if err == nil && out != dedup.Processed {
					err = fmt.Errorf("fresh key answered %s", out)
				}
				return err
			}
		}},
		{"c", 32, func(round int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				keys := make([]string, 32)
				for j := range keys {
					keys[j] = key(fmt.Sprintf("batch%d", round), seq*32+int64(j))
				}
				return w.Batch(ctx, store, "bench", keys)
			}
		}},
		{"d", 1, func(int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				out, err := w.Dedup(ctx, dupStore, "bench", dupKeys[seq%pool])
				if err == nil && out != dedup.Duplicate {
					err = fmt.Errorf("done key answered %s", out)
				}
				return err
			}
		}},
		{"e", 1, func(int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				res, err := fast.Process(ctx, dedup.Request{Group: "bench", Key: fastKeys[seq%pool]}, noop)
				if err == nil && (res.Outcome != dedup.Duplicate || !res.FastPath) {
					err = fmt.Errorf("done key answered %s (fast path %v)", res.Outcome, res.FastPath)
				}
				return err
			}
		}},
		{"f", 1, func(round int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				k := key(fmt.Sprintf("fast%d", round), seq)
				wallet := seq % benchwork.Wallets
				res, err := fast.Process(ctx, dedup.Request{Group: "bench", Key: k, MessageID: k}, func(ctx context.Context) error {
					return w.Pay(dedup.Tx(ctx), k, wallet, 1)
				})
				if err == nil && res.Outcome != dedup.Processed {
					err = fmt.Errorf("fresh key answered %s", res.Outcome)
				}
				return err
			}
		}},
		{"g", 1, func(round int) func(context.Context, int64) error { return leased(leaseStore, "lease", round) }},
		{"h", 1, func(round int) func(context.Context, int64) error { return leased(rlease, "rlease", round) }},
		{"i", 1, func(int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				out, err := w.Dedup(ctx, store, "bench", dupKeys[seq%pool])
				if err == nil && out != dedup.Duplicate {
					err = fmt.Errorf("done key answered %s", out)
				}
				return err
			}
		}},
		{"j", 1, func(int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error { return w.BareOneTripPlusTrip(ctx, key("bare2", seq)) }
		}},
		{"k", 1, func(round int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				k := key(fmt.Sprintf("get%d", round), seq)
				if err := rdb.Get(ctx, "idemqbench:"+run+":missing:"+k).Err(); !errors.Is(err, redis.Nil) {
					return fmt.Errorf("GET of a missing key: %v", err)
				}
				out, err := w.Dedup(ctx, store, "bench", k)
				if err == nil && out != dedup.Processed {
					err = fmt.Errorf("fresh key answered %s", out)
				}
				return err
			}
		}},
		{"l", 1, func(round int) func(context.Context, int64) error {
			return func(ctx context.Context, seq int64) error {
				k := key(fmt.Sprintf("hand%d", round), seq)
				return w.HandLease(ctx, k, fmt.Sprintf("o%d", seq))
			}
		}},
	}
	// Rounds alternate the order of a, a' and b, so that neither always runs
	// on the fresher database or right after the heavier case; each ratio
	// is taken within a round and the median over rounds reported.
	vals := result{}
	for round := 0; round < rounds; round++ {
		order := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
		if round%2 == 1 {
			order[0], order[2] = 2, 0
		}
		for _, ci := range order {
			cs := cases[ci]
			if !want[cs.name] || ((cs.name == "e" || cs.name == "f" || cs.name == "h" || cs.name == "k") && fast == nil) {
				continue
			}
			v, err := benchwork.Measure(ctx, c, d, cs.perOp, cs.op(round))
			if err != nil {
				return nil, fmt.Errorf("case %s: %w", cs.name, err)
			}
			vals[cs.name] = append(vals[cs.name], v)
		}
	}
	return vals, nil
}

func noop(context.Context) error { return nil }

// startCPUProfile writes a CPU profile to path until the returned stop is
// called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Printf("cpuprofile: %v", err)
		}
	}, nil
}

// loadAvg is the machine's load average over 1, 5 and 15 minutes, or "?"
// where /proc/loadavg cannot be read.
func loadAvg() string {
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
