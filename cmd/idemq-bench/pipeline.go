package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
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

// pipelineMain measures producer -> test broker -> consumer -> handler,
// bare and behind the Standard chain with transactional dedup.
func pipelineMain(args []string) {
	fs := flag.NewFlagSet("pipeline", flag.ExitOnError)
	dbName := fs.String("db", "sqlite", "database")
	n := fs.Int("n", 5000, "messages per run")
	c := fs.Int("c", 8, "consumer goroutines")
	senders := fs.Int("senders", 4, "producer goroutines")
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

	fmt.Printf("idemq-bench pipeline: %s, %d messages, %d senders, %d consumer goroutines\n", *dbName, *n, *senders, *c)
	bare, err := runPipeline(db, prod, broker, "bare", *n, *c, *senders, lg)
	if err != nil {
		log.Fatal(err)
	}
	withDedup, err := runPipeline(db, prod, broker, "dedup", *n, *c, *senders, lg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%-28s %9s\n", "path", "msgs/s")
	fmt.Printf("%-28s %9.0f\n", "without dedup (bare tx)", bare)
	fmt.Printf("%-28s %9.0f  ratio %.2f\n", "with Standard chain + dedup", withDedup, withDedup/bare)
}

func runPipeline(db *gorm.DB, prod *producer.Producer, broker *rmqtest.Broker, mode string, n, c, senders int, lg *slog.Logger) (float64, error) {
	ctx := context.Background()
	run := fmt.Sprintf("%s%d", mode, time.Now().UnixNano()%1e9)
	prefix := "pipe_" + run + "_"
	w, err := benchwork.Setup(ctx, db, prefix)
	if err != nil {
		return 0, err
	}
	var handled atomic.Int64
	var handler idemq.Handler
	var chain []idemq.Middleware
	if mode == "bare" {
		handler = idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error {
			if err := w.Bare(ctx, m.ID); err != nil {
				return err
			}
			handled.Add(1)
			return nil
		})
	} else {
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
			if err := w.Pay(dedup.Tx(ctx), m.ID, int64(len(m.ID))%benchwork.Wallets, 1); err != nil {
				return err
			}
			handled.Add(1)
			return nil
		})
	}
	topic := "pipe_" + run
	cons, err := consumer.New(consumer.Config{
		NameServers:       []string{broker.Addr()},
		Group:             "g_" + run,
		Subscriptions:     []consumer.Subscription{{Topic: topic}},
		Handler:           handler,
		Middleware:        chain,
		ConsumeGoroutines: c,
		StartFrom:         consumer.StartFromFirst, // the warm-up is sent before Start
		Logger:            lg,
	})
	if err != nil {
		return 0, err
	}
	// Create the topic before the consumer subscribes, as an operator would.
	if err := broker.CreateTopic(topic, 0); err != nil {
		return 0, err
	}
	if _, err := prod.SendSync(ctx, &idemq.Message{Topic: topic, Body: []byte("warm-up")}); err != nil {
		return 0, err
	}
	if err := cons.Start(); err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cons.Shutdown(sctx)
	}()
	for handled.Load() < 1 { // the warm-up message
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
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
	want := int64(per*senders) + 1
	deadline := time.Now().Add(5 * time.Minute)
	for handled.Load() < want {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: %d of %d handled", mode, handled.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return float64(want-1) / time.Since(start).Seconds(), nil
}
