package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/benchwork"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
)

// quietLogger keeps the client library and the chain to errors.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// startBroker starts an in-process test broker and a producer on it whose
// IDs come from the given snowflake node; stop shuts both down.
func startBroker(lg *slog.Logger, node int64) (*rmqtest.Broker, *msgid.Generator, *producer.Producer, func()) {
	broker, err := rmqtest.New(rmqtest.Config{Logger: lg})
	if err != nil {
		log.Fatal(err)
	}
	ids, err := msgid.NewGenerator(msgid.FixedNode(node), msgid.GeneratorConfig{})
	if err != nil {
		log.Fatal(err)
	}
	prod, err := producer.New(producer.Config{NameServers: []string{broker.Addr()}, IDSource: ids, Logger: lg})
	if err != nil {
		log.Fatal(err)
	}
	if err := prod.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	return broker, ids, prod, func() { prod.Shutdown(context.Background()); broker.Close() }
}

// pipelineMain measures the consumer's whole path (test broker ->
// rocketmq-client-go push consumer -> chain -> handler) three ways, on
// messages already stored in the topic, so the producer's rate does not
// bound it:
//
//	empty  no chain, a handler that does nothing: the consumer's own ceiling
//	bare   no chain, the payout transaction (no dedup)
//	dedup  the Standard chain with transactional dedup around the same payout
//
// Each round runs the three cases in a rotated order; msgs/s is the median
// over rounds and each ratio the median of the ratios within a round. The
// rate counts from the first message handled to the last, so the client's
// start and first rebalance are not in it.
func pipelineMain(args []string) {
	fs := flag.NewFlagSet("pipeline", flag.ExitOnError)
	dbName := fs.String("db", "sqlite", "database")
	n := fs.Int("n", 5000, "messages per case")
	c := fs.Int("c", 8, "consumer goroutines")
	senders := fs.Int("senders", 4, "producer goroutines filling the topic")
	rounds := fs.Int("rounds", 3, "rounds (medians reported)")
	fs.Parse(args)
	log.SetFlags(0)
	lg := quietLogger()
	producer.SetClientLogger(lg)

	db, err := open(*dbName)
	if err != nil {
		log.Fatal(err)
	}
	broker, _, prod, stop := startBroker(lg, 1)
	defer stop()

	fmt.Printf("idemq-bench pipeline: %s, %d messages per case, %d consumer goroutines, %d rounds, load %s\n", *dbName, *n, *c, *rounds, loadAvg())
	cases := []string{"empty", "bare", "dedup"}
	res := result{}
	for r := 0; r < *rounds; r++ {
		for i := range cases {
			mode := cases[(i+r)%len(cases)]
			rate, err := runPipeline(db, prod, broker, mode, *n, *c, *senders, lg)
			if err != nil {
				log.Fatal(err)
			}
			res[mode] = append(res[mode], rate)
		}
	}
	fmt.Printf("%-40s %9s %8s\n", "path", "msgs/s", "ratio")
	fmt.Printf("%-40s %9s\n", "empty handler, no chain (the ceiling)", res.rate("empty"))
	fmt.Printf("%-40s %9s %8s\n", "payout tx, no chain (bare)", res.rate("bare"), res.ratio("bare", "empty", "")+"/empty")
	fmt.Printf("%-40s %9s %8s %s\n", "Standard chain + dedup + payout", res.rate("dedup"), res.ratio("dedup", "empty", "")+"/empty", res.ratio("dedup", "bare", "")+"/bare")
	if *rounds > 1 {
		fmt.Printf("dedup/bare by round: %s\n", res.rounds("dedup", "bare"))
	}
	fmt.Printf("summary pipeline %s c=%d: empty=%s/s bare/empty=%s dedup/empty=%s dedup/bare=%s\n", *dbName, *c,
		res.rate("empty"), res.ratio("bare", "empty", ""), res.ratio("dedup", "empty", ""), res.ratio("dedup", "bare", ""))
}

// runPipeline fills a new topic with n messages, then consumes them with a
// new group in the given mode and returns msgs/s from the first message
// handled to the last.
func runPipeline(db *gorm.DB, prod *producer.Producer, broker *rmqtest.Broker, mode string, n, c, senders int, lg *slog.Logger) (float64, error) {
	ctx := context.Background()
	run := fmt.Sprintf("%s%d", mode, time.Now().UnixNano()%1e9)
	prefix := "pipe_" + run + "_"
	w, err := benchwork.Setup(ctx, db, prefix)
	if err != nil {
		return 0, err
	}
	defer w.Drop(ctx)
	var handled atomic.Int64
	var first, last atomic.Int64 // Unix ns
	done := func() {
		now := time.Now().UnixNano()
		if handled.Add(1) == 1 {
			first.Store(now)
		}
		last.Store(now)
	}
	var handler idemq.Handler
	// The cases without a chain run the handler alone (an explicit custom
	// chain of one pass-through middleware: WithoutDedup would add the
	// consumer's Recover, Logging and Timeout); dedup runs it in the
	// Standard chain built below.
	chain := []idemq.Middleware{func(next idemq.Handler) idemq.Handler { return next }}
	switch mode {
	case "empty":
		handler = idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
			done()
			return nil
		})
	case "bare":
		handler = idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error {
			if err := w.Bare(ctx, m.ID); err != nil {
				return err
			}
			done()
			return nil
		})
	default:
		store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
		if err != nil {
			return 0, err
		}
		if err := store.Migrate(ctx); err != nil {
			return 0, err
		}
		if chain, err = middleware.Standard(middleware.StandardConfig{Store: store, Ledger: store, Logger: lg}); err != nil {
			return 0, err
		}
		handler = idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error {
			if err := w.Pay(dedup.Tx(ctx), m.ID, rand.Int64N(benchwork.Wallets), 1); err != nil {
				return err
			}
			done()
			return nil
		})
	}
	topic := "pipe_" + run
	// Create the topic and fill it before the consumer subscribes.
	if err := broker.CreateTopic(topic, 0); err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	var sendErr atomic.Value
	per := n / senders
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				msg := &idemq.Message{Topic: topic, Body: []byte(strings.Repeat("x", 64))}
				if _, err := prod.SendSync(ctx, msg); err != nil {
					sendErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := sendErr.Load().(error); err != nil {
		return 0, err
	}
	want := int64(per * senders)
	cons, err := consumer.New(consumer.Config{
		NameServers:       []string{broker.Addr()},
		Group:             "g_" + run,
		Subscriptions:     []consumer.Subscription{{Topic: topic}},
		Handler:           handler,
		CustomChain:       chain,
		ConsumeGoroutines: c,
		StartFrom:         consumer.StartFromFirst, // the topic is filled before Start
		Logger:            lg,
	})
	if err != nil {
		return 0, err
	}
	if err := cons.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cons.Shutdown(sctx)
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for handled.Load() < want {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: %d of %d handled", mode, handled.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Duration(last.Load() - first.Load())
	if took <= 0 {
		return 0, fmt.Errorf("%s: no time measured", mode)
	}
	return float64(want-1) / took.Seconds(), nil
}
