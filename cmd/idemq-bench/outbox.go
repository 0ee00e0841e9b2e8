package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/producer/outbox"
)

// outboxMain measures the outbox relay, from its first claim to the last
// row marked sent, against the producer's raw send rate to the same broker
// with as many concurrent senders as the relays have sends in flight.
func outboxMain(args []string) {
	fs := flag.NewFlagSet("outbox", flag.ExitOnError)
	dbs := fs.String("db", "sqlite,postgres,mysql", "databases")
	n := fs.Int("n", 5000, "rows per run")
	d := fs.Duration("d", 2*time.Second, "duration of each raw send measurement")
	rounds := fs.Int("rounds", 5, "rounds (medians of rates and of within-round ratios reported)")
	cases := fs.String("cases", "raw,seq,relay1,relay4", "cases to run (raw measures raw-1, raw-8 and raw-32)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.Parse(args)
	log.SetFlags(0)
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		defer stop()
	}
	want := map[string]bool{}
	for _, c := range strings.Split(*cases, ",") {
		want[strings.TrimSpace(c)] = true
	}
	lg := quietLogger()
	producer.SetClientLogger(lg)

	broker, ids, prod, stop := startBroker(lg, 2)
	defer stop()
	ctx := context.Background()
	for _, t := range []string{"raw", "outbox_bench"} {
		if err := broker.CreateTopic(t, 0); err != nil {
			log.Fatal(err)
		}
	}

	// raw sends messages like the relay's (same producer, body and
	// properties, a message ID stamped) from the given number of
	// goroutines.
	w := outbox.DefaultSendWindow
	var res result
	raw := func(workers int) float64 {
		var sent atomic.Int64
		stop := time.Now().Add(*d)
		start, cpu0 := time.Now(), procCPU()
		var wg sync.WaitGroup
		for i := 0; i < workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					id, err := ids.NextID()
					if err != nil {
						log.Fatal(err)
					}
					msg := &idemq.Message{ID: id, Topic: "raw", Body: []byte(strings.Repeat("x", 64)),
						Properties: map[string]string{idemq.PropertyMessageID: id}}
					if _, err := prod.Send(ctx, msg); err != nil {
						log.Fatal(err)
					}
					sent.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed, cpu := time.Since(start), procCPU()-cpu0
		if workers == w {
			res["rawW.cpu"] = append(res["rawW.cpu"], float64(cpu.Microseconds())/float64(sent.Load()))
		}
		return float64(sent.Load()) / elapsed.Seconds()
	}
	fmt.Printf("idemq-bench outbox: %d rows per run, %d rounds, load %s\n", *n, *rounds, loadAvg())
	fmt.Printf("raw-k = the producer's own send rate to the test broker from k goroutines: raw-%d and raw-%d match the sends\n", w, 4*w)
	fmt.Printf("in flight of 1 and 4 relays (SendWindow %d, the default); seq = one relay sending one row after another\n", w)
	fmt.Printf("(SendWindow 1), against raw-1. A relay's rate counts from its first claim to its last row marked sent.\n")
	fmt.Printf("The summary gives each relay case against both: raw with as many sends in flight, and raw with as many senders.\n\n")
	fmt.Printf("%-9s %7s %7s %9s %7s %9s %7s %7s %9s %9s\n", "db", "raw-1", "seq-1", "seq/raw", "raw-"+fmt.Sprint(w), "relay-1", "r/raw",
		"raw-"+fmt.Sprint(4*w), "relay-4", "r/raw")
	var summary []string
	for _, name := range strings.Split(*dbs, ",") {
		name = strings.TrimSpace(name)
		db, err := open(name)
		if err != nil {
			fmt.Printf("%-9s skipped: %v\n", name, err)
			continue
		}
		res = result{}
		for r := 0; r < *rounds; r++ {
			if want["raw"] {
				res["raw1"] = append(res["raw1"], raw(1))
				res["rawW"] = append(res["rawW"], raw(w))
			}
			for _, c := range []struct {
				k              string
				relays, window int
			}{{"seq", 1, 1}, {"relay1", 1, 0}, {"relay4", 4, 0}} {
				if !want[c.k] {
					continue
				}
				v, err := runRelays(db, name, prod, ids, c.relays, c.window, *n)
				if err != nil {
					log.Fatalf("%s, %s: %v", name, c.k, err)
				}
				res[c.k] = append(res[c.k], v.rate)
				res[c.k+".cpu"] = append(res[c.k+".cpu"], v.procUS)
				res[c.k+".db"] = append(res[c.k+".db"], v.dbUS)
			}
			if want["raw"] {
				res["raw4W"] = append(res["raw4W"], raw(4*w))
				res["raw4"] = append(res["raw4"], raw(4))
			}
		}
		fmt.Printf("%-9s %7s %7s %9s %7s %9s %7s %7s %9s %9s\n", name, res.rate("raw1"), res.rate("seq"), res.ratio("seq", "raw1", ""),
			res.rate("rawW"), res.rate("relay1"), res.ratio("relay1", "rawW", ""),
			res.rate("raw4W"), res.rate("relay4"), res.ratio("relay4", "raw4W", ""))
		fmt.Printf("%-9s cpu us/row: raw-%d %s; relay-1 %s + db server %s; relay-4 %s + db server %s\n", "", w, res.us("rawW.cpu"),
			res.us("relay1.cpu"), res.us("relay1.db"), res.us("relay4.cpu"), res.us("relay4.db"))
		if sqlDB, err := db.DB(); err == nil {
			st := sqlDB.Stats()
			fmt.Printf("%-9s pool: %d open, %d idle closed, %d waits\n", "", st.OpenConnections, st.MaxIdleClosed, st.WaitCount)
		}
		fmt.Printf("%-9s same senders: raw-1 %s, raw-4 %s; relay-1/raw-1 %s, relay-4/raw-4 %s\n", "", res.rate("raw1"), res.rate("raw4"),
			res.ratio("relay1", "raw1", ""), res.ratio("relay4", "raw4", ""))
		summary = append(summary, fmt.Sprintf("summary relay/raw %s: 1=%s 4=%s (same sends in flight); 1=%s 4=%s (same senders); seq/raw 1=%s", name,
			res.ratio("relay1", "rawW", ""), res.ratio("relay4", "raw4W", ""), res.ratio("relay1", "raw1", ""), res.ratio("relay4", "raw4", ""), res.ratio("seq", "raw1", "")))
	}
	fmt.Println()
	for _, l := range summary {
		fmt.Println(l)
	}
}

// relayRun is one drain of the outbox: rows/s, and the CPU time per row of
// this process and of the database server's processes (all of them, so
// other clients of a shared server count too).
type relayRun struct {
	rate, procUS, dbUS float64
}

// runRelays fills a new outbox table with n rows, then drains it with the
// given number of relays (window: their SendWindow, 0 for the default) and
// returns rows/s from their start to the last row marked sent.
func runRelays(db *gorm.DB, dbName string, prod *producer.Producer, ids msgid.Source, relays, window, n int) (relayRun, error) {
	ctx := context.Background()
	prefix := fmt.Sprintf("obench%d_%d_", relays, time.Now().UnixNano()%1e6)
	defer db.Exec("DROP TABLE IF EXISTS " + prefix + "outbox")
	ob, err := outbox.New(db, outbox.Config{IDSource: ids, TablePrefix: prefix})
	if err != nil {
		return relayRun{}, err
	}
	if err := ob.Migrate(ctx); err != nil {
		return relayRun{}, err
	}
	// Rows are committed in business transactions of 100 before the clock
	// starts; the relays then drain them.
	for i := 0; i < n; i += 100 {
		err := db.Transaction(func(tx *gorm.DB) error {
			for j := i; j < min(i+100, n); j++ {
				if err := ob.Enqueue(tx, &idemq.Message{Topic: "outbox_bench", Body: []byte(strings.Repeat("x", 64))}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return relayRun{}, err
		}
	}
	var started []*outbox.Relay
	stop := func() {
		for _, r := range started {
			_ = r.Shutdown(context.WithoutCancel(ctx))
		}
	}
	defer stop()
	var rs []*outbox.Relay
	for i := 0; i < relays; i++ {
		r, err := outbox.NewRelay(ob, prod, outbox.RelayConfig{ID: fmt.Sprintf("bench-%d", i), PollInterval: 5 * time.Millisecond, SendWindow: window})
		if err != nil {
			return relayRun{}, err
		}
		rs = append(rs, r)
	}
	// The clock starts as the relays start (each checks the table, then
	// claims) and stops when their own counters say the last row was
	// marked sent; the table is checked after the clock stopped.
	start, cpu0, db0 := time.Now(), procCPU(), serverCPU(dbName)
	for _, r := range rs {
		if err := r.Start(ctx); err != nil {
			return relayRun{}, err
		}
		started = append(started, r)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var sent, failures int64
		for _, r := range rs {
			st := r.Stats()
			sent += st.Sent
			failures += st.Failures
		}
		if sent >= int64(n) {
			break
		}
		if failures > 0 {
			return relayRun{}, fmt.Errorf("%d failed sends", failures)
		}
		if time.Now().After(deadline) {
			return relayRun{}, fmt.Errorf("%d rows still unsent", int64(n)-sent)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed, cpu, dbCPU := time.Since(start), procCPU()-cpu0, serverCPU(dbName)-db0
	stop()
	started = nil
	st, err := ob.Stats(ctx)
	if err != nil {
		return relayRun{}, err
	}
	if st.Sent != int64(n) || st.Pending != 0 {
		return relayRun{}, fmt.Errorf("%d sent, %d pending, %d failed, want %d sent", st.Sent, st.Pending, st.Failed, n)
	}
	return relayRun{
		rate:   float64(n) / elapsed.Seconds(),
		procUS: float64(cpu.Microseconds()) / float64(n),
		dbUS:   float64(dbCPU.Microseconds()) / float64(n),
	}, nil
}

// us is the median of case k's microseconds, or "-".
func (r result) us(k string) string {
	if len(r[k]) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fus", median(r[k]))
}

// procCPU is the CPU time this process used so far.
func procCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time used so far by the processes of the database
// server on this machine (PostgreSQL's backends, MariaDB's or MySQL's
// server), read from /proc; 0 where it cannot be read (SQLite runs in this
// process).
func serverCPU(dbName string) time.Duration {
	names := map[string][]string{"postgres": {"postgres"}, "mysql": {"mariadbd", "mysqld"}}[dbName]
	if len(names) == 0 {
		return 0
	}
	dirs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ... utime stime are fields 14 and 15.
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open || !slices.Contains(names, st[open+1:end]) {
			continue
		}
		f := strings.Fields(st[end+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
