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
	fs.Parse(args)
	log.SetFlags(0)
	lg := quietLogger()
	producer.SetClientLogger(lg)

	_, ids, prod, stop := startBroker(lg, 2)
	defer stop()
	ctx := context.Background()

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
	raw1, raw4 := raw(1), raw(4)
	fmt.Printf("idemq-bench outbox: %d rows per run; raw producer sends to the test broker: %.0f/s (1 sender), %.0f/s (4 senders)\n\n", *n, raw1, raw4)
	fmt.Printf("%-9s %8s %11s %11s %11s %11s\n", "db", "relays", "rows/s", "vs raw-1", "vs raw-4", "")
	for _, name := range strings.Split(*dbs, ",") {
		db, err := open(strings.TrimSpace(name))
		if err != nil {
			fmt.Printf("%-9s skipped: %v\n", name, err)
			continue
		}
		for _, relays := range []int{1, 4} {
			v, err := runRelays(db, prod, ids, relays, *n)
			if err != nil {
				log.Fatalf("%s, %d relays: %v", name, relays, err)
			}
			fmt.Printf("%-9s %8d %11.0f %11.2f %11.2f\n", name, relays, v, v/raw1, v/raw4)
		}
	}
}

func runRelays(db *gorm.DB, prod *producer.Producer, ids msgid.Source, relays, n int) (float64, error) {
	ctx := context.Background()
	prefix := fmt.Sprintf("obench%d_%d_", relays, time.Now().UnixNano()%1e6)
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
		r, err := outbox.NewRelay(ob, prod, outbox.RelayConfig{ID: fmt.Sprintf("bench-%d", i), PollInterval: 5 * time.Millisecond})
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
