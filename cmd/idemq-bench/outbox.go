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

// outboxMain measures the outbox relay, from commit to broker confirm,
// against the producer's raw send rate to the same broker.
func outboxMain(args []string) {
	fs := flag.NewFlagSet("outbox", flag.ExitOnError)
	dbs := fs.String("db", "sqlite,postgres,mysql", "databases")
	n := fs.Int("n", 5000, "rows per run")
	d := fs.Duration("d", 3*time.Second, "duration of the raw send measurement")
	rounds := fs.Int("rounds", 5, "rounds (medians of rates and of within-round ratios reported)")
	fs.Parse(args)
	log.SetFlags(0)
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
					if _, err := prod.Send(ctx, &idemq.Message{Topic: "raw", Body: []byte(strings.Repeat("x", 64))}); err != nil {
						log.Fatal(err)
					}
					sent.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(sent.Load()) / time.Since(start).Seconds()
	}
	fmt.Printf("idemq-bench outbox: %d rows per run, %d rounds, load %s\n", *n, *rounds, loadAvg())
	fmt.Printf("raw = the producer's own send rate to the test broker with as many senders as relays (1 or 4 goroutines);\n")
	fmt.Printf("seq = one relay sending one row after another (SendWindow 1); relay = SendWindow %d (the default)\n\n", outbox.DefaultSendWindow)
	fmt.Printf("%-9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "db", "raw-1", "seq-1", "relay-1", "relay/raw", "raw-4", "relay-4", "relay/raw", "relay/seq")
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
			res["raw1"] = append(res["raw1"], raw(1))
			for _, c := range []struct {
				k              string
				relays, window int
			}{{"seq1", 1, 1}, {"relay1", 1, 0}, {"relay4", 4, 0}} {
				v, err := runRelays(db, prod, ids, c.relays, c.window, *n)
				if err != nil {
					log.Fatalf("%s, %s: %v", name, c.k, err)
				}
				res[c.k] = append(res[c.k], v)
			}
			res["raw4"] = append(res["raw4"], raw(4))
		}
		fmt.Printf("%-9s %9s %9s %9s %9s %9s %9s %9s %9s\n", name, res.rate("raw1"), res.rate("seq1"), res.rate("relay1"), res.ratio("relay1", "raw1", ""),
			res.rate("raw4"), res.rate("relay4"), res.ratio("relay4", "raw4", ""), res.ratio("relay1", "seq1", "x"))
		summary = append(summary, fmt.Sprintf("summary relay/raw %s: 1=%s 4=%s (seq/raw 1=%s)", name,
			res.ratio("relay1", "raw1", ""), res.ratio("relay4", "raw4", ""), res.ratio("seq1", "raw1", "")))
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
	start := time.Now()
	var started []*outbox.Relay
	stop := func() {
		for _, r := range started {
			_ = r.Shutdown(context.WithoutCancel(ctx))
		}
	}
	defer stop()
	for i := 0; i < relays; i++ {
		r, err := outbox.NewRelay(ob, prod, outbox.RelayConfig{ID: fmt.Sprintf("bench-%d", i), PollInterval: 5 * time.Millisecond, SendWindow: window})
		if err != nil {
			return 0, err
		}
		if err := r.Start(ctx); err != nil {
			return 0, err
		}
		started = append(started, r)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := ob.Stats(ctx)
		if err != nil {
			return 0, err
		}
		if st.Pending == 0 {
			if st.Sent != int64(n) {
				return 0, fmt.Errorf("%d sent, %d failed, want %d sent", st.Sent, st.Failed, n)
			}
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d rows still pending", st.Pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stop()
	started = nil
	return float64(n) / elapsed.Seconds(), nil
}
