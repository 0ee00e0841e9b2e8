// Command idemq-chaos attacks idemq the way an outside attacker would,
// through its public API only, and checks that every message's effect
// happened exactly once and that no message was lost.
//
// It runs a simulated at-least-once broker (the coordinator, this process)
// and several worker processes (this binary, re-executed), each consuming
// with several goroutines through middleware.Standard in front of the store
// under test. The broker publishes N messages, some of them several times
// (duplicates), hands some copies out at the same instant to different
// consumers, redelivers whatever is not acknowledged, and keeps a journal of
// every delivery and acknowledgement. Meanwhile it injects faults:
//
//	kill         SIGKILL a worker (restarted at once)
//	stop         SIGSTOP a worker past the lease and the in-flight timeout, then SIGCONT
//	crash        crash points: exit after commit and before the ack; exit in the
//	             handler after its effect (before commit, or before DONE in lease mode)
//	db-cut       reset every database connection and refuse new ones, through a TCP proxy
//	db-stall     hold every database byte, through the proxy
//	conn-kill    end the workers' sessions on the server (pg_terminate_backend, KILL),
//	             and only theirs
//	redis-cut    the same as db-cut and db-stall, for Redis
//	redis-stall
//	server-kill  SIGKILL the database server and restart it (-own-servers only)
//	redis-kill   SIGKILL Redis and restart it (-own-servers only)
//
// Handlers fail too: some messages fail once or twice then succeed, some fail
// permanently (dead letters), some always fail (buried at MaxAttempts), some
// run a failing statement and swallow its error, and a few carry bad input
// (an empty, 10 KB, NUL or invalid-UTF-8 key; a NUL or invalid-UTF-8 message
// ID; an empty consumer group; a very large body).
//
// Modes: tx (transactional dedup: the handler credits an account and writes
// an effect row through dedup.Tx), tx-redis (the same behind the Redis fast
// path), lease (lease mode; the handler calls an external API with the
// message ID as idempotency key and the lease's fencing token, dedup.Fence;
// the API applies an effect once per key, refuses a token lower than one it
// has seen, and reports a write it accepted from a run whose lease had been
// taken over), lease-redis (the same behind the fast path). Databases: sqlite, postgres, mysql, and mysql-cfr (MySQL with
// clientFoundRows=true).
//
// At the end it checks every message: effect exactly once and no dead
// letter, or (for messages that always fail) exactly one dead letter and no
// effect; every copy acknowledged; no zombie write; every account's balance
// equals the sum of its effects and the sum the plan expects. It prints a
// table per database and mode, then every violation with the seed to
// reproduce it, and exits 1 on any violation (2 if a run could not be
// carried out).
//
// Without -own-servers it uses the servers named by -postgres-dsn,
// -mysql-dsn and -redis (defaults: IDEMQ_POSTGRES_DSN, IDEMQ_MYSQL_DSN,
// IDEMQ_REDIS_ADDR) and never touches them: it only cuts and stalls its own
// proxies and ends its own sessions. Every run uses its own table prefix and
// Redis key prefix and drops them at the end (kept with -keep).
//
// The short run of scripts/test:
//
//	go run ./cmd/idemq-chaos -short
//
// The long run (100,000 messages, 30% duplicates):
//
//	go run ./cmd/idemq-chaos -long
package main

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-sql-driver/mysql"
)

func main() {
	if raw := os.Getenv(workerEnv); raw != "" {
		if err := runWorker(raw); err != nil {
			fmt.Fprintln(os.Stderr, "idemq-chaos worker:", err)
			os.Exit(1)
		}
		return
	}
	// The driver logs connections the faults broke; the harness counts
	// what matters itself.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	os.Exit(coordinate(os.Args[1:]))
}

type options struct {
	dbs, modes, faults   string
	postgres, mysql, rdb string
	short, long          bool
	ownServers           bool
	seed                 uint64
	plan                 PlanConfig
	workers, goroutines  int
	chaos, drain         time.Duration
	faultEvery           time.Duration
	crashRate            float64
	crashes              int
	lease, inflight      time.Duration
	maxAttempts          int
	dir                  string
	keep, verbose        bool
	show                 int
}

func coordinate(args []string) int {
	fs := flag.NewFlagSet("idemq-chaos", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.dbs, "dbs", "sqlite,postgres,mysql,mysql-cfr", "databases, comma-separated: sqlite, postgres, mysql, mysql-cfr (MySQL with clientFoundRows=true)")
	fs.StringVar(&o.modes, "modes", "tx,tx-redis,lease,lease-redis", "modes, comma-separated: tx, tx-redis, lease, lease-redis")
	fs.StringVar(&o.faults, "faults", "all", "faults, comma-separated, or all: "+strings.Join(allFaults, ", "))
	fs.StringVar(&o.postgres, "postgres-dsn", os.Getenv("IDEMQ_POSTGRES_DSN"), "PostgreSQL DSN (default $IDEMQ_POSTGRES_DSN)")
	fs.StringVar(&o.mysql, "mysql-dsn", os.Getenv("IDEMQ_MYSQL_DSN"), "MySQL/MariaDB DSN (default $IDEMQ_MYSQL_DSN)")
	fs.StringVar(&o.rdb, "redis", os.Getenv("IDEMQ_REDIS_ADDR"), "Redis host:port (default $IDEMQ_REDIS_ADDR)")
	fs.BoolVar(&o.short, "short", false, "the short run of scripts/test: every database and mode, about 2 minutes")
	fs.BoolVar(&o.long, "long", false, "the long run: 100,000 messages, 30% duplicates, per database and mode")
	fs.BoolVar(&o.ownServers, "own-servers", false, "start private PostgreSQL, MariaDB and Redis servers (temporary directories, free ports) that may be killed and restarted")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed (default: from the clock); the same seed draws the same messages and fault schedule")
	fs.IntVar(&o.plan.Messages, "messages", 300, "messages per run")
	fs.Float64Var(&o.plan.DupRate, "dup", 0.3, "share of messages published more than once (2 to 4 copies)")
	fs.Float64Var(&o.plan.FailRate, "fail-rate", 0.05, "share of messages that fail once or twice, then succeed")
	fs.Float64Var(&o.plan.Poison, "poison", 0.02, "share of messages that fail permanently")
	fs.Float64Var(&o.plan.Exhaust, "exhaust", 0.01, "share of messages that always fail with a retryable error")
	fs.Float64Var(&o.plan.Swallow, "swallow", 0.02, "share of messages whose first handler run swallows a failed statement")
	fs.Float64Var(&o.plan.BusinessK, "business-keys", 0.2, "share of messages deduplicated by a business key")
	fs.BoolVar(&o.plan.BadInput, "bad-input", true, "add messages with bad keys, IDs and groups")
	fs.IntVar(&o.plan.BigBody, "big-body", 10<<20, "body size of the big permanently failing message (0: none)")
	fs.IntVar(&o.plan.Accounts, "accounts", 16, "accounts the handler credits")
	fs.IntVar(&o.workers, "workers", 3, "worker processes")
	fs.IntVar(&o.goroutines, "goroutines", 4, "consumer goroutines per worker")
	fs.DurationVar(&o.chaos, "chaos", 8*time.Second, "fault window; messages are published over its first 60%")
	fs.DurationVar(&o.drain, "drain", 30*time.Second, "after the fault window, how long to wait for every copy to be acknowledged")
	fs.DurationVar(&o.faultEvery, "fault-every", 700*time.Millisecond, "mean time between faults")
	fs.Float64Var(&o.crashRate, "crash-rate", 0.02, "share of deliveries that carry a crash point")
	fs.IntVar(&o.crashes, "crashes", 6, "crash points per run at most")
	fs.DurationVar(&o.lease, "lease", 2*time.Second, "lease duration in lease modes")
	fs.DurationVar(&o.inflight, "inflight", 3*time.Second, "the broker redelivers a delivery not acknowledged within this")
	fs.IntVar(&o.maxAttempts, "max-attempts", 5, "DeadLetter's MaxAttempts")
	fs.StringVar(&o.dir, "dir", "", "directory for journals, worker logs and SQLite files (default: a temporary one; kept for runs with violations)")
	fs.BoolVar(&o.keep, "keep", false, "keep tables, Redis keys and files of every run")
	fs.BoolVar(&o.verbose, "v", false, "progress on stderr")
	fs.IntVar(&o.show, "show", 20, "violations listed per run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.short && o.long {
		fmt.Fprintln(os.Stderr, "idemq-chaos: -short and -long exclude each other")
		return 2
	}
	preset := func(name string, apply func()) {
		if !set[name] {
			apply()
		}
	}
	if o.short {
		preset("dbs", func() { o.dbs = "sqlite,postgres,mysql,mysql-cfr" })
		preset("modes", func() { o.modes = "tx,tx-redis,lease,lease-redis" })
		preset("messages", func() { o.plan.Messages = 200 })
		preset("chaos", func() { o.chaos = 5 * time.Second })
		preset("drain", func() { o.drain = 12 * time.Second })
		preset("lease", func() { o.lease = 1500 * time.Millisecond })
		preset("inflight", func() { o.inflight = 2 * time.Second })
		preset("fault-every", func() { o.faultEvery = 500 * time.Millisecond })
		preset("workers", func() { o.workers = 3 })
		preset("goroutines", func() { o.goroutines = 3 })
	}
	if o.long {
		preset("messages", func() { o.plan.Messages = 100_000 })
		preset("dup", func() { o.plan.DupRate = 0.3 })
		preset("chaos", func() { o.chaos = 10 * time.Minute })
		preset("drain", func() { o.drain = 10 * time.Minute })
		preset("crashes", func() { o.crashes = 200 })
		preset("crash-rate", func() { o.crashRate = 0.002 })
		preset("workers", func() { o.workers = 4 })
		preset("goroutines", func() { o.goroutines = 8 })
		preset("fault-every", func() { o.faultEvery = 2 * time.Second })
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	faults := map[string]bool{}
	for _, f := range splitList(o.faults) {
		if f == "all" {
			for _, a := range allFaults {
				faults[a] = true
			}
			continue
		}
		if !contains(allFaults, f) {
			fmt.Fprintf(os.Stderr, "idemq-chaos: unknown fault %q\n", f)
			return 2
		}
		faults[f] = true
	}
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "idemq-chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "idemq-chaos:", err)
			return 2
		}
		dir = d
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var servers *ownServers
	if o.ownServers {
		var err error
		servers, err = startOwnServers(ctx, dir, splitList(o.dbs), splitList(o.modes))
		if err != nil {
			fmt.Fprintln(os.Stderr, "idemq-chaos: -own-servers:", err)
			if servers != nil {
				servers.close()
			}
			return 2
		}
		defer servers.close()
		o.postgres, o.mysql, o.rdb = servers.postgresDSN(), servers.mysqlDSN(), servers.redisAddr()
	}

	fmt.Printf("idemq-chaos: seed %d, %d messages per run (%.0f%% duplicated), %d workers x %d goroutines, faults: %s\n",
		o.seed, o.plan.Messages, o.plan.DupRate*100, o.workers, o.goroutines, faultList(faults))
	var results []*RunResult
	for _, dbName := range splitList(o.dbs) {
		dsn := ""
		switch dbName {
		case "sqlite":
		case "postgres":
			dsn = o.postgres
		case "mysql":
			dsn = o.mysql
		case "mysql-cfr":
			dsn = withParam(o.mysql, "clientFoundRows", "true")
		default:
			fmt.Fprintf(os.Stderr, "idemq-chaos: unknown database %q\n", dbName)
			return 2
		}
		if dbName != "sqlite" && dsn == "" {
			fmt.Fprintf(os.Stderr, "idemq-chaos: %s needs a DSN (flag or environment), or -own-servers\n", dbName)
			return 2
		}
		for _, mode := range splitList(o.modes) {
			if !contains([]string{ModeTx, ModeTxRedis, ModeLease, ModeLeaseRedis}, mode) {
				fmt.Fprintf(os.Stderr, "idemq-chaos: unknown mode %q\n", mode)
				return 2
			}
			if ctx.Err() != nil {
				break
			}
			cfg := &RunConfig{
				DB: dbName, Mode: mode, DSN: dsn, Redis: o.rdb,
				Seed: o.seed, Index: runIndex(dbName, mode), Plan: o.plan,
				Workers: o.workers, Goroutines: o.goroutines,
				Chaos: o.chaos, Drain: o.drain, FaultEvery: o.faultEvery, Faults: faults,
				CrashRate: o.crashRate, Crashes: o.crashes, Lease: o.lease,
				MaxAttempts: o.maxAttempts, Inflight: o.inflight, Dir: dir, Keep: o.keep, Verbose: o.verbose,
			}
			cfg.Plan.Group = "chaos_" + mode
			if servers != nil {
				cfg.Server = servers.forDB(dbName)
				cfg.RedisServer = servers.redis
			}
			if o.verbose {
				fmt.Fprintf(os.Stderr, "idemq-chaos: run %s %s\n", dbName, mode)
			}
			res := Run(ctx, cfg)
			results = append(results, res)
			printRow(res)
		}
	}
	return report(os.Stdout, results, &o, dir, set)
}

var tableHeader = "db\tmode\tmsgs\tcopies\tdeliv\tprocessed\tburied\tkills\tstops\tcrashes\tcuts\tstalls\tconnkills\tsrvkills\treplays\tfenced\tsecs\tviolations"

func printRow(r *RunResult) {
	// Rows are printed once more, aligned, at the end; this line is progress.
	status := "ok"
	switch {
	case r.Err != nil:
		status = "ERROR: " + r.Err.Error()
	case !r.Report.OK():
		status = r.Report.Summary()
	}
	fmt.Fprintf(os.Stderr, "idemq-chaos: %s %s done in %.1fs: %s\n", r.Cfg.DB, r.Cfg.Mode, r.Elapsed.Seconds(), status)
}

func report(out *os.File, results []*RunResult, o *options, dir string, set map[string]bool) int {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, tableHeader+"\t")
	code := 0
	for _, r := range results {
		f := r.Faults
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t%.0f\tERROR\t\n", r.Cfg.DB, r.Cfg.Mode, r.Elapsed.Seconds())
			code = max(code, 2)
			continue
		}
		rep := r.Report
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%s\t\n",
			r.Cfg.DB, r.Cfg.Mode, rep.Messages, rep.Copies, rep.Deliveries, rep.Processed, rep.Buried,
			f.Kills, f.Stops, f.Crashes, f.Cuts, f.Stalls, f.ConnKills, f.ServerKills, r.Replays, r.Fenced,
			r.Elapsed.Seconds(), rep.Summary())
		if !rep.OK() && code == 0 {
			code = 1
		}
	}
	tw.Flush()
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(out, "\n%s %s: the run failed: %v\n", r.Cfg.DB, r.Cfg.Mode, r.Err)
			continue
		}
		if r.Report.OK() {
			continue
		}
		fmt.Fprintf(out, "\n%s %s: %d violations (%s); reproduce with\n  go run ./cmd/idemq-chaos %s\n",
			r.Cfg.DB, r.Cfg.Mode, len(r.Report.Violations), r.Report.Summary(), reproArgs(r.Cfg, o, set))
		vs := append([]Violation(nil), r.Report.Violations...)
		sort.SliceStable(vs, func(i, j int) bool { return vs[i].Kind < vs[j].Kind })
		for i, v := range vs {
			if i == o.show {
				fmt.Fprintf(out, "  ... and %d more\n", len(vs)-i)
				break
			}
			fmt.Fprintf(out, "  %s\n", v)
		}
	}
	if code != 0 {
		fmt.Fprintf(out, "\njournals and worker logs of the failed runs: %s\n", dir)
	} else if o.dir == "" && !o.keep {
		os.RemoveAll(dir)
	}
	if code == 0 {
		fmt.Fprintln(out, "\nOK: every effect exactly once, nothing lost")
	}
	return code
}

// reproArgs is the command line that repeats run r: the same seed draws the
// same messages and fault schedule (timing still varies).
func reproArgs(c *RunConfig, o *options, set map[string]bool) string {
	args := []string{fmt.Sprintf("-seed %d", c.Seed), "-dbs " + c.DB, "-modes " + c.Mode}
	switch {
	case o.short:
		args = append(args, "-short")
	case o.long:
		args = append(args, "-long")
	}
	for _, name := range []string{"messages", "dup", "faults", "workers", "goroutines", "chaos", "drain", "fault-every", "crash-rate", "crashes", "lease", "inflight", "max-attempts", "big-body", "own-servers"} {
		if set[name] {
			f := flagValue(o, name)
			args = append(args, "-"+name+"="+f)
		}
	}
	return strings.Join(args, " ")
}

func flagValue(o *options, name string) string {
	switch name {
	case "messages":
		return fmt.Sprint(o.plan.Messages)
	case "dup":
		return fmt.Sprint(o.plan.DupRate)
	case "faults":
		return o.faults
	case "workers":
		return fmt.Sprint(o.workers)
	case "goroutines":
		return fmt.Sprint(o.goroutines)
	case "chaos":
		return o.chaos.String()
	case "drain":
		return o.drain.String()
	case "fault-every":
		return o.faultEvery.String()
	case "crash-rate":
		return fmt.Sprint(o.crashRate)
	case "crashes":
		return fmt.Sprint(o.crashes)
	case "lease":
		return o.lease.String()
	case "inflight":
		return o.inflight.String()
	case "max-attempts":
		return fmt.Sprint(o.maxAttempts)
	case "big-body":
		return fmt.Sprint(o.plan.BigBody)
	case "own-servers":
		return fmt.Sprint(o.ownServers)
	}
	return ""
}

// runIndex is a stable number per database and mode, so that one run can
// be repeated alone with the same seed.
func runIndex(db, mode string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(db + "/" + mode))
	return h.Sum64()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func faultList(m map[string]bool) string {
	var out []string
	for _, f := range allFaults {
		if m[f] {
			out = append(out, f)
		}
	}
	return strings.Join(out, ",")
}

// withParam adds name=value to a MySQL DSN's parameters, replacing any
// value it had.
func withParam(dsn, name, value string) string {
	if dsn == "" {
		return ""
	}
	base, query, _ := strings.Cut(dsn, "?")
	var keep []string
	for _, p := range strings.Split(query, "&") {
		if p != "" && !strings.HasPrefix(p, name+"=") {
			keep = append(keep, p)
		}
	}
	keep = append(keep, name+"="+value)
	return base + "?" + strings.Join(keep, "&")
}
