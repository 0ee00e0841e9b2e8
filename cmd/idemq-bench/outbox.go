package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
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
	raw := func(workers int) float64 {
		var sent atomic.Int64
		stop := time.Now().Add(*d)
		start := time.Now()
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
		return float64(sent.Load()) / time.Since(start).Seconds()
	}
	w := outbox.DefaultSendWindow
	fmt.Printf("idemq-bench outbox: %d rows per run, %d rounds, load %s\n", *n, *rounds, loadAvg())
	fmt.Printf("raw-k = the producer's own send rate to the test broker from k goroutines: raw-%d and raw-%d match the sends\n", w, 4*w)
	fmt.Printf("in flight of 1 and 4 relays (SendWindow %d, the default); seq = one relay sending one row after another\n", w)
	fmt.Printf("(SendWindow 1), against raw-1. A relay's rate counts from its first claim to its last row marked sent.\n\n")
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
		res := result{}
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
				v, err := runRelays(db, prod, ids, c.relays, c.window, *n)
				if err != nil {
					log.Fatalf("%s, %s: %v", name, c.k, err)
				}
				res[c.k] = append(res[c.k], v)
			}
			if want["raw"] {
				res["raw4W"] = append(res["raw4W"], raw(4*w))
			}
		}
		fmt.Printf("%-9s %7s %7s %9s %7s %9s %7s %7s %9s %9s\n", name, res.rate("raw1"), res.rate("seq"), res.ratio("seq", "raw1", ""),
			res.rate("rawW"), res.rate("relay1"), res.ratio("relay1", "rawW", ""),
			res.rate("raw4W"), res.rate("relay4"), res.ratio("relay4", "raw4W", ""))
		if sqlDB, err := db.DB(); err == nil {
			st := sqlDB.Stats()
			fmt.Printf("%-9s pool: %d open, %d idle closed, %d waits\n", "", st.OpenConnections, st.MaxIdleClosed, st.WaitCount)
		}
		summary = append(summary, fmt.Sprintf("summary relay/raw %s: 1=%s 4=%s (seq/raw 1=%s)", name,
			res.ratio("relay1", "rawW", ""), res.ratio("relay4", "raw4W", ""), res.ratio("seq", "raw1", "")))
	}
	fmt.Println()
	for _, l := range summary {
		fmt.Println(l)
	}
}

// runRelays fills a new outbox table with n rows, then drains it with the
// given number of relays (window: their SendWindow, 0 for the default) and
// returns rows/s from their start to the last row marked sent.
func runRelays(db *gorm.DB, prod *producer.Producer, ids msgid.Source, relays, window, n int) (float64, error) {
	ctx := context.Background()
	prefix := fmt.Sprintf("obench%d_%d_", relays, time.Now().UnixNano()%1e6)
	defer db.Exec("DROP TABLE IF EXISTS " + prefix + "outbox")
	ob, err := outbox.New(db, outbox.Config{IDSource: ids, TablePrefix: prefix})
	if err != nil {
		return 0, err
	}
	if err := ob.Migrate(ctx); err != nil {
		return 0, err
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
			return 0, err
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
			return 0, err
		}
		rs = append(rs, r)
	}
	// The clock starts as the relays start (each checks the table, then
	// claims) and stops when their own counters say the last row was
	// marked sent; the table is checked after the clock stopped.
	start := time.Now()
	for _, r := range rs {
		if err := r.Start(ctx); err != nil {
			return 0, err
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
			return 0, fmt.Errorf("%d failed sends", failures)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d rows still unsent", int64(n)-sent)
		}
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	stop()
	started = nil
	st, err := ob.Stats(ctx)
	if err != nil {
		return 0, err
	}
	if st.Sent != int64(n) || st.Pending != 0 {
		return 0, fmt.Errorf("%d sent, %d pending, %d failed, want %d sent", st.Sent, st.Pending, st.Failed, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}
