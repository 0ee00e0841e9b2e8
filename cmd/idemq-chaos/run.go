package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/dbopen"
	"github.com/idemq/idemq/internal/faultproxy"
)

// Fault kinds.
const (
	FaultKill       = "kill"        // SIGKILL a worker (it is restarted)
	FaultStop       = "stop"        // SIGSTOP a worker past the lease, then SIGCONT
	FaultDBCut      = "db-cut"      // reset every database connection, refuse new ones, for a while
	FaultDBStall    = "db-stall"    // hold every database byte for a while
	FaultConnKill   = "conn-kill"   // pg_terminate_backend / KILL the workers' sessions
	FaultRedisCut   = "redis-cut"   // reset every Redis connection, refuse new ones, for a while
	FaultRedisStall = "redis-stall" // hold every Redis byte for a while
	FaultCrash      = "crash"       // crash points: exit after commit before ack, in the handler after its effect
	FaultServerKill = "server-kill" // SIGKILL the database (own servers only), restart it
	FaultRedisKill  = "redis-kill"  // SIGKILL Redis (own servers only), restart it
)

var allFaults = []string{FaultKill, FaultStop, FaultDBCut, FaultDBStall, FaultConnKill, FaultRedisCut, FaultRedisStall, FaultCrash, FaultServerKill, FaultRedisKill}

// RunConfig is one run: one database, one mode.
type RunConfig struct {
	DB          string // sqlite, postgres, mysql, mysql-cfr
	Mode        string
	DSN         string // the server's own DSN ("" for SQLite)
	Redis       string // the server's own address
	Server      *ownServer
	RedisServer *ownServer
	Seed        uint64
	Index       uint64
	Plan        PlanConfig
	Workers     int
	Goroutines  int
	Chaos       time.Duration // faults are injected for at most this long
	Drain       time.Duration // then the run waits this long for the rest
	FaultEvery  time.Duration
	Faults      map[string]bool
	CrashRate   float64
	Crashes     int
	Lease       time.Duration
	MaxAttempts int
	Inflight    time.Duration
	Dir         string
	Keep        bool
	Verbose     bool
}

func (c *RunConfig) dialect() string {
	if c.DB == "mysql-cfr" {
		return "mysql"
	}
	return c.DB
}

// FaultStats counts the faults injected in a run.
type FaultStats struct {
	Kills, Stops, Crashes, Cuts, Stalls, ConnKills, ServerKills int
}

// RunResult is the outcome of one run.
type RunResult struct {
	Cfg     *RunConfig
	Report  *Report
	Faults  FaultStats
	Replays int // external API replays absorbed by the idempotency key
	Fenced  int // external API calls refused for a stale fencing token
	Elapsed time.Duration
	Err     error // the run itself failed (not a violation)
}

// procs supervises the worker processes.
type procs struct {
	cfg     *RunConfig
	wcfg    WorkerConfig
	exe     string
	logDir  string
	mu      sync.Mutex
	cur     []*exec.Cmd
	stopped []bool // SIGSTOPped right now
	closing bool
	crashes int
	wg      sync.WaitGroup
}

func (p *procs) start(i int) error {
	wc := p.wcfg
	wc.Index = i
	raw, err := json.Marshal(wc)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(p.logDir, fmt.Sprintf("worker-%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	p.mu.Lock()
	p.cur[i] = cmd
	p.stopped[i] = false
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == exitCrash {
			p.crashes++
		}
		restart := !p.closing && p.cur[i] == cmd
		p.mu.Unlock()
		if restart {
			time.Sleep(100 * time.Millisecond)
			p.mu.Lock()
			closing := p.closing
			p.mu.Unlock()
			if !closing {
				_ = p.start(i)
			}
		}
	}()
	return nil
}

func (p *procs) signal(i int, sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := p.cur[i]
	if cmd == nil || cmd.Process == nil || (sig == syscall.SIGSTOP && p.stopped[i]) {
		return false
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return false
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped[i] = true
	case syscall.SIGCONT:
		p.stopped[i] = false
	}
	return true
}

func (p *procs) contAll() {
	for i := range p.cur {
		p.signal(i, syscall.SIGCONT)
	}
}

// close waits up to d for the workers to exit on their own, then kills them.
func (p *procs) close(d time.Duration) {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.contAll()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	p.mu.Lock()
	for _, c := range p.cur {
		if c != nil && c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	p.mu.Unlock()
	<-done
}

// Run performs one run and checks it.
func Run(ctx context.Context, cfg *RunConfig) (res *RunResult) {
	start := time.Now()
	res = &RunResult{Cfg: cfg}
	defer func() { res.Elapsed = time.Since(start) }()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Index))
	prefix := fmt.Sprintf("cx%08x_", rng.Uint32())
	dir := filepath.Join(cfg.Dir, fmt.Sprintf("%s-%s-%s", cfg.DB, cfg.Mode, prefix[:len(prefix)-1]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Err = err
		return res
	}
	dialect := cfg.dialect()

	// The harness's own connection, straight to the server.
	dsn := cfg.DSN
	if dialect == "sqlite" {
		dsn = filepath.Join(dir, "chaos.db")
	}
	db, closeDB, err := dbopen.Open(dialect, dsn)
	if err != nil {
		res.Err = fmt.Errorf("open %s: %w", cfg.DB, err)
		return res
	}
	defer closeDB()
	scfg := sqldedup.Config{TablePrefix: prefix}
	if modeIsLease(cfg.Mode) {
		scfg.Mode, scfg.LeaseDuration = sqldedup.Lease, cfg.Lease
	}
	store, err := sqldedup.New(db, scfg)
	if err != nil {
		res.Err = err
		return res
	}
	t := harnessTables(prefix)
	cleanup := func() {
		if !cfg.Keep {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = dropTables(cctx, db, dialect, prefix)
		}
	}
	if err := store.Migrate(ctx); err != nil {
		res.Err = fmt.Errorf("migrate: %w", err)
		cleanup()
		return res
	}
	if err := createHarnessTables(ctx, db, dialect, t, cfg.Plan.Accounts); err != nil {
		res.Err = err
		cleanup()
		return res
	}
	defer cleanup()

	// Proxies between the workers and the servers.
	wcfg := WorkerConfig{
		Dialect: dialect, DSN: dsn, Prefix: prefix, Mode: cfg.Mode,
		Goroutines: cfg.Goroutines, Lease: cfg.Lease, MaxAttempts: cfg.MaxAttempts,
	}
	var dbProxy, redisProxy *faultproxy.Proxy
	if dialect != "sqlite" {
		tgt, err := target(dialect, dsn)
		if err != nil {
			res.Err = err
			return res
		}
		if dbProxy, err = faultproxy.New(tgt); err != nil {
			res.Err = err
			return res
		}
		defer dbProxy.Close()
		if wcfg.DSN, err = redirect(dialect, dsn, dbProxy.Addr()); err != nil {
			res.Err = err
			return res
		}
	}
	var rdb *redis.Client
	if modeHasRedis(cfg.Mode) {
		if cfg.Redis == "" {
			res.Err = errors.New("mode " + cfg.Mode + " needs Redis (-redis or IDEMQ_REDIS_ADDR)")
			return res
		}
		if redisProxy, err = faultproxy.New(cfg.Redis); err != nil {
			res.Err = err
			return res
		}
		defer redisProxy.Close()
		wcfg.Redis = redisProxy.Addr()
		wcfg.RedisPrefix = "idemq-chaos:" + prefix
		rdb = redis.NewClient(&redis.Options{Addr: cfg.Redis})
		defer rdb.Close()
		defer deleteRedisKeys(rdb, wcfg.RedisPrefix)
	}

	// The broker and its messages: published over the first part of the
	// fault window, so that faults meet deliveries.
	cfg.Plan.IDBase = int64(cfg.Seed%1000)*1_000_000_000 + int64(cfg.Index%100)*10_000_000
	msgs := Plan(cfg.Plan, rng)
	spread := cfg.Chaos * 6 / 10
	pubStart := time.Now().Add(300 * time.Millisecond)
	var crashPoints []string
	if cfg.Faults[FaultCrash] {
		crashPoints = []string{CrashBeforeAck, CrashInHandler}
	}
	brk, err := NewBroker(BrokerConfig{
		InflightTimeout: cfg.Inflight, RedeliverDelay: 100 * time.Millisecond,
		CrashRate: cfg.CrashRate, Crashes: cfg.Crashes, CrashPoints: crashPoints,
		Journal: filepath.Join(dir, "journal.txt"),
	}, msgs, rng, func(m *PlannedMessage) time.Time {
		return pubStart.Add(time.Duration(float64(spread) * float64(m.N) / float64(len(msgs)+1)))
	})
	if err != nil {
		res.Err = err
		return res
	}
	defer brk.Close()
	wcfg.Broker = brk.Addr()
	brk.SetFaulting(true)

	exe, err := os.Executable()
	if err != nil {
		res.Err = err
		return res
	}
	ps := &procs{cfg: cfg, wcfg: wcfg, exe: exe, logDir: dir, cur: make([]*exec.Cmd, cfg.Workers), stopped: make([]bool, cfg.Workers)}
	for i := 0; i < cfg.Workers; i++ {
		if err := ps.start(i); err != nil {
			res.Err = err
			ps.close(time.Second)
			return res
		}
	}

	// Faults until everything is acknowledged or the window closes.
	inj := &injector{cfg: cfg, rng: rng, ps: ps, db: db, dialect: dialect, dbProxy: dbProxy, redisProxy: redisProxy}
	chaosEnd := time.Now().Add(cfg.Chaos)
	faultCtx, stopFaults := context.WithDeadline(ctx, chaosEnd)
	faultsDone := make(chan struct{})
	go func() { inj.loop(faultCtx, brk); close(faultsDone) }()
	for time.Now().Before(chaosEnd) && !brk.Done() && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	stopFaults()
	<-faultsDone
	brk.SetFaulting(false)
	inj.heal()

	// The drain ends when every copy is acknowledged, at the drain timeout,
	// or when no copy was acknowledged for longer than any lease or
	// in-flight timeout could explain: what is left is redelivered forever.
	drainEnd := time.Now().Add(cfg.Drain)
	quiet := max(cfg.Lease, cfg.Inflight) + 2*time.Second
	lastAcked, _ := brk.Progress()
	lastChange := time.Now()
	for time.Now().Before(drainEnd) && !brk.Done() && ctx.Err() == nil && time.Since(lastChange) < quiet {
		time.Sleep(50 * time.Millisecond)
		if acked, _ := brk.Progress(); acked != lastAcked {
			lastAcked, lastChange = acked, time.Now()
		}
	}
	if cfg.Verbose {
		acked, total := brk.Progress()
		fmt.Fprintf(os.Stderr, "idemq-chaos: %s %s: %d of %d copies acknowledged after the drain\n", cfg.DB, cfg.Mode, acked, total)
	}
	brk.Stop()
	ps.close(10 * time.Second)
	if ctx.Err() != nil {
		res.Err = errors.New("interrupted")
		return res
	}
	res.Faults = inj.stats
	res.Faults.Crashes = ps.crashes

	// What the run left behind.
	octx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	obs := Observed{ZombieWrites: map[int]int{}}
	if modeIsLease(cfg.Mode) {
		var calls int
		obs.Effects, obs.ZombieWrites, obs.Balances, calls, res.Replays = brk.API.Snapshot()
		_ = calls
		res.Fenced = brk.API.Fenced()
	} else {
		obs.Effects, obs.Balances, err = observeEffects(octx, db, t)
		if err != nil {
			res.Err = fmt.Errorf("read effects: %w", err)
			return res
		}
	}
	obs.BalancesKnown = true
	obs.DeadLetters, obs.DeadLetterReasons, obs.UnmatchedDeadLetters, err = observeDeadLetters(octx, store, msgs)
	if err != nil {
		res.Err = fmt.Errorf("read dead letters: %w", err)
		return res
	}
	brk.Close()
	res.Report = Check(brk.Records(msgs), obs)
	if res.Report.OK() && !cfg.Keep {
		os.RemoveAll(dir)
	}
	return res
}

func deleteRedisKeys(rdb *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if strings.HasPrefix(iter.Val(), prefix) {
			batch = append(batch, iter.Val())
		}
		if len(batch) >= 500 {
			rdb.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Del(ctx, batch...)
	}
}

// injector injects the enabled faults, one at a time.
type injector struct {
	cfg        *RunConfig
	rng        *rand.Rand
	ps         *procs
	db         *gorm.DB
	dialect    string
	dbProxy    *faultproxy.Proxy
	redisProxy *faultproxy.Proxy
	stats      FaultStats
}

func (in *injector) kinds() []string {
	var out []string
	for _, f := range allFaults {
		if !in.cfg.Faults[f] {
			continue
		}
		switch f {
		case FaultCrash:
			continue // drawn per delivery by the broker
		case FaultDBCut, FaultDBStall, FaultConnKill:
			if in.dbProxy == nil {
				continue
			}
		case FaultRedisCut, FaultRedisStall:
			if in.redisProxy == nil {
				continue
			}
		case FaultServerKill:
			if in.cfg.Server == nil {
				continue
			}
		case FaultRedisKill:
			if in.cfg.RedisServer == nil || in.redisProxy == nil {
				continue
			}
		}
		out = append(out, f)
	}
	return out
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (in *injector) jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(in.rng.Int64N(int64(d)+1))
}

func (in *injector) loop(ctx context.Context, brk *Broker) {
	kinds := in.kinds()
	if len(kinds) == 0 {
		return
	}
	for sleep(ctx, in.jitter(in.cfg.FaultEvery)) {
		if brk.Done() {
			return
		}
		f := kinds[in.rng.IntN(len(kinds))]
		w := in.rng.IntN(in.cfg.Workers)
		switch f {
		case FaultKill:
			if in.ps.signal(w, syscall.SIGKILL) {
				in.stats.Kills++
			}
		case FaultStop:
			if in.ps.signal(w, syscall.SIGSTOP) {
				in.stats.Stops++
				// Past the lease (and past the broker's in-flight timeout,
				// so its deliveries go to others meanwhile).
				hold := max(in.cfg.Lease, in.cfg.Inflight) + in.cfg.Lease/2
				sleep(context.Background(), hold)
				in.ps.signal(w, syscall.SIGCONT)
			}
		case FaultDBCut:
			in.dbProxy.Cut()
			in.stats.Cuts++
			sleep(ctx, in.jitter(time.Second))
			in.dbProxy.Restore()
		case FaultDBStall:
			in.dbProxy.Stall()
			in.stats.Stalls++
			sleep(ctx, in.jitter(time.Second))
			in.dbProxy.Resume()
		case FaultRedisCut:
			in.redisProxy.Cut()
			in.stats.Cuts++
			sleep(ctx, in.jitter(time.Second))
			in.redisProxy.Restore()
		case FaultRedisStall:
			in.redisProxy.Stall()
			in.stats.Stalls++
			sleep(ctx, in.jitter(time.Second))
			in.redisProxy.Resume()
		case FaultConnKill:
			kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n, err := killSessions(kctx, in.db, in.dialect, in.dbProxy.UpstreamPorts())
			cancel()
			if err == nil && n > 0 {
				in.stats.ConnKills += n
			}
		case FaultServerKill:
			if in.cfg.Server.killAndRestart() == nil {
				in.stats.ServerKills++
			}
		case FaultRedisKill:
			if in.cfg.RedisServer.killAndRestart() == nil {
				in.stats.ServerKills++
			}
		}
	}
}

// heal ends every fault still in force.
func (in *injector) heal() {
	if in.dbProxy != nil {
		in.dbProxy.Restore()
		in.dbProxy.Resume()
	}
	if in.redisProxy != nil {
		in.redisProxy.Restore()
		in.redisProxy.Resume()
	}
	in.ps.contAll()
}
