// Command redpacket is a red-packet payout service built on idemq.
//
// An order service grants red packets by publishing one message per order
// through the idemq producer; a payout consumer credits the winner's wallet
// in the same database transaction as its dedup row (transactional mode), so
// a red packet is paid once however often its message arrives. The run
// injects what happens in production:
//
//   - duplicate sends of the same message (a producer retry after a lost
//     confirm: same message ID),
//   - re-grants of the same order as a new message (a new message ID, the
//     same business key order:<id>:redpacket),
//   - a consumer that commits and then dies before its ack (the broker
//     redelivers a message that was already paid),
//   - a consumer restart in the middle of the stream,
//   - a slow handler,
//
// and ends with a reconciliation: sent, delivered, duplicates skipped,
// payouts, and double payouts, which must be 0.
//
// With no flags it runs on the embedded default: SQLite in a temporary
// directory and the in-process test broker (integration/rmqtest). On a
// database of yours it drops and recreates its own tables, all prefixed
// redpacket_, at start. Flags
// point it at a real RocketMQ name server, PostgreSQL or MySQL, and Redis:
//
//	go run ./examples/redpacket -namesrv 10.0.0.5:9876 -db postgres -dsn "host=... dbname=..." -redis 127.0.0.1:6379
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/dbopen"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/topics"
)

const (
	topic   = "redpacket_grant"
	group   = "payout_service"
	wallets = 50
)

// Grant is the body of a red-packet grant message.
type Grant struct {
	OrderID int64 `json:"order_id"`
	Wallet  int64 `json:"wallet"`
	Amount  int64 `json:"amount"` // cents
}

type options struct {
	orders  int
	dupRate float64
	db      string
	dsn     string
	namesrv string
	redis   string
	timeout time.Duration
	verbose bool
}

func main() {
	var o options
	flag.IntVar(&o.orders, "orders", 300, "number of orders to grant red packets for")
	flag.Float64Var(&o.dupRate, "dup", 0.3, "fraction of grants sent twice (same message ID)")
	flag.StringVar(&o.db, "db", "sqlite", "database: sqlite, postgres or mysql")
	flag.StringVar(&o.dsn, "dsn", "", "database DSN; for SQLite a file path (default: a SQLite file in a temporary directory)")
	flag.StringVar(&o.namesrv, "namesrv", "", "RocketMQ name server host:port (default: the in-process test broker)")
	flag.StringVar(&o.redis, "redis", "", "Redis address for the dedup fast path (default: none)")
	flag.DurationVar(&o.timeout, "timeout", 90*time.Second, "give up waiting for payouts after this long")
	flag.BoolVar(&o.verbose, "v", false, "log every delivery")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "redpacket:", err)
		os.Exit(1)
	}
}

// payoutService is the consumer side: wallets, payouts and the counters of
// the reconciliation.
type payoutService struct {
	db         *gorm.DB
	prefix     string
	delivered  atomic.Int64 // deliveries that reached the chain
	duplicates atomic.Int64 // duplicates counted by consumers already shut down
	acked      atomic.Int64 // deliveries acknowledged by consumers already shut down
	paid       atomic.Int64 // handler runs that committed a payout
	crashes    atomic.Int64 // injected "died after commit, before ack"
	crashOnce  sync.Map     // order id -> struct{}: crash once per chosen order
}

func (s *payoutService) migrate(ctx context.Context) error {
	auto := "BIGSERIAL PRIMARY KEY"
	switch s.db.Dialector.Name() {
	case "sqlite":
		auto = "INTEGER PRIMARY KEY"
	case "mysql":
		auto = "BIGINT AUTO_INCREMENT PRIMARY KEY"
	}
	// The example starts from empty tables of its own (prefix redpacket_),
	// so that its reconciliation is about this run only.
	for _, t := range []string{"wallets", "payouts", "idemq_dedup", "idemq_attempts", "idemq_dead_letters"} {
		if err := s.db.WithContext(ctx).Exec("DROP TABLE IF EXISTS " + s.prefix + t).Error; err != nil {
			return err
		}
	}
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS " + s.prefix + "wallets (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)",
		// No unique index on order_id on purpose: the reconciliation must be
		// able to see a double payout if dedup ever let one through.
		"CREATE TABLE IF NOT EXISTS " + s.prefix + "payouts (id " + auto + ", order_id BIGINT NOT NULL, wallet_id BIGINT NOT NULL, amount BIGINT NOT NULL, message_id VARCHAR(64) NOT NULL)",
	} {
		if err := s.db.WithContext(ctx).Exec(q).Error; err != nil {
			return err
		}
	}
	// Every user has a wallet before any red packet arrives.
	for id := 1; id <= wallets; id++ {
		if err := s.db.WithContext(ctx).Exec("INSERT INTO "+s.prefix+"wallets (id, balance) VALUES (?, 0)", id).Error; err != nil {
			return err
		}
	}
	return nil
}

// pay is the business handler: credit the wallet and record the payout, in
// the transaction dedup opened.
func (s *payoutService) pay(ctx context.Context, msg *idemq.Message) error {
	var g Grant
	if err := json.Unmarshal(msg.Body, &g); err != nil {
		return idemq.Permanent(fmt.Errorf("bad grant body: %w", err))
	}
	if g.OrderID%25 == 0 {
		time.Sleep(200 * time.Millisecond) // a slow handler
	}
	tx := dedup.Tx(ctx)
	r := tx.Exec("UPDATE "+s.prefix+"wallets SET balance = balance + ? WHERE id = ?", g.Amount, g.Wallet)
	if r.Error != nil {
		return r.Error
	}
	if r.RowsAffected != 1 {
		return idemq.Permanent(fmt.Errorf("wallet %d does not exist", g.Wallet))
	}
	if err := tx.Exec("INSERT INTO "+s.prefix+"payouts (order_id, wallet_id, amount, message_id) VALUES (?, ?, ?, ?)",
		g.OrderID, g.Wallet, g.Amount, msg.ID).Error; err != nil {
		return err
	}
	s.paid.Add(1)
	return nil
}

// crashAfterCommit stands outside the dedup middleware: for every 40th
// order it reports a failure once after the payout committed, as a consumer
// that died before its ack would leave the message unacknowledged. The
// broker redelivers; dedup must answer duplicate.
func (s *payoutService) crashAfterCommit(next idemq.Handler) idemq.Handler {
	return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		s.delivered.Add(1)
		err := next.Handle(ctx, msg)
		if err != nil {
			return err
		}
		id, _ := strconv.ParseInt(msg.Property("order_id"), 10, 64)
		if id%40 == 7 {
			if _, dup := s.crashOnce.LoadOrStore(id, struct{}{}); !dup {
				s.crashes.Add(1)
				return errors.New("injected crash after commit, before ack")
			}
		}
		return nil
	})
}

func orderKey(msg *idemq.Message) (string, error) {
	if id := msg.Property("order_id"); id != "" {
		return "order:" + id + ":redpacket", nil
	}
	return msg.ID, nil
}

func run(ctx context.Context, o options) error {
	level := slog.LevelError // the injected failures are expected
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	producer.SetClientLogger(log)

	db, cleanup, err := dbopen.Open(o.db, o.dsn)
	if err != nil {
		return err
	}
	defer cleanup()

	nameServers := []string{o.namesrv}
	where := "RocketMQ at " + o.namesrv
	if o.namesrv == "" {
		b, err := rmqtest.New(rmqtest.Config{TimeScale: 0.01, Logger: log})
		if err != nil {
			return err
		}
		defer b.Close()
		nameServers = []string{b.Addr()}
		where = "in-process test broker at " + b.Addr()
	}
	fmt.Printf("redpacket: %d orders on %s with %s\n", o.orders, o.db, where)

	// Create the topic first, as on a real cluster: a name server answers
	// TOPIC_NOT_EXIST for a topic nobody created, and the consumer's Start
	// would fail. topics.Create is `mqadmin updateTopic`; it is an update
	// when the topic exists.
	tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
	err = topics.Create(tctx, nameServers, topic, topics.Config{Queues: 4})
	tcancel()
	if err != nil {
		return err
	}

	svc := &payoutService{db: db, prefix: "redpacket_"}
	if err := svc.migrate(ctx); err != nil {
		return err
	}
	store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: "redpacket_idemq_"})
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	var rdb *redis.Client
	var fastPath redisdedup.FastPathConfig
	if o.redis != "" {
		rdb = redis.NewClient(&redis.Options{Addr: o.redis, ContextTimeoutEnabled: true})
		defer rdb.Close()
		// Markers of this run only: the example starts from empty tables.
		fastPath.KeyPrefix = fmt.Sprintf("idemq:redpacket:%d:", time.Now().UnixNano())
	}

	// The producer's node ID is leased in the database, so two running
	// order services never mint the same message IDs.
	lease, err := msgid.NewSQLNodeLease(db, msgid.NodeLeaseConfig{TablePrefix: "redpacket_", Migrate: true})
	if err != nil {
		return err
	}
	if err := lease.Start(ctx); err != nil {
		return err
	}
	defer lease.Shutdown(context.WithoutCancel(ctx))
	ids, err := msgid.NewGenerator(lease, msgid.GeneratorConfig{})
	if err != nil {
		return err
	}
	prod, err := producer.New(producer.Config{NameServers: nameServers, Group: "order_service", IDSource: ids, Logger: log})
	if err != nil {
		return err
	}
	if err := prod.Start(ctx); err != nil {
		return err
	}
	defer prod.Shutdown(context.Background())

	newConsumer := func() (*consumer.Consumer, error) {
		cfg := consumer.Config{
			NameServers:   nameServers,
			Group:         group,
			Subscriptions: []consumer.Subscription{{Topic: topic}},
			Store:         store, // dedup, attempts and dead letters
			Handler:       idemq.HandlerFunc(svc.pay),
			// One payout per order, whichever message asks for it.
			Dedup:             middleware.DedupConfig{KeyFunc: orderKey},
			Middleware:        []idemq.Middleware{svc.crashAfterCommit},
			ConsumeGoroutines: 8,
			// The orders are sent right after Start: a new group must not
			// skip what lands before its first rebalance.
			StartFrom: consumer.StartFromFirst,
			Logger:    log,
		}
		if rdb != nil {
			cfg.FastPath, cfg.FastPathConfig = rdb, fastPath
		}
		c, err := consumer.New(cfg)
		if err != nil {
			return nil, err
		}
		return c, c.Start(ctx)
	}
	cons, err := newConsumer()
	if err != nil {
		return err
	}

	// The order service.
	var sends, dupSends, regrants int
	var expected int64
	for i := 1; i <= o.orders; i++ {
		g := Grant{OrderID: int64(i), Wallet: int64(rand.IntN(wallets) + 1), Amount: int64(rand.IntN(880) + 8)}
		expected += g.Amount
		body, _ := json.Marshal(g)
		msg := &idemq.Message{Topic: topic, Tags: "grant", Body: body,
			Properties: map[string]string{"order_id": strconv.Itoa(i)}}
		if _, err := prod.SendSync(ctx, msg); err != nil {
			return fmt.Errorf("grant order %d: %w", i, err)
		}
		sends++
		if rand.Float64() < o.dupRate {
			// A retry after a lost confirm: the same message, same ID.
			if _, err := prod.SendSync(ctx, msg); err != nil {
				return fmt.Errorf("re-send order %d: %w", i, err)
			}
			sends++
			dupSends++
		}
		if i%10 == 0 {
			// The order service grants the same order again as a new
			// message (new ID): the business key catches it.
			again := &idemq.Message{Topic: topic, Tags: "grant", Body: body,
				Properties: map[string]string{"order_id": strconv.Itoa(i)}}
			if _, err := prod.SendSync(ctx, again); err != nil {
				return fmt.Errorf("re-grant order %d: %w", i, err)
			}
			sends++
			regrants++
		}
		if i == o.orders/2 {
			// Restart the consumer mid-stream.
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := cons.Shutdown(sctx)
			cancel()
			if err != nil {
				return fmt.Errorf("consumer shutdown: %w", err)
			}
			// The next consumer counts from 0.
			svc.duplicates.Add(cons.Stats().Duplicates)
			svc.acked.Add(cons.Stats().Succeeded)
			if cons, err = newConsumer(); err != nil {
				return fmt.Errorf("consumer restart: %w", err)
			}
		}
	}

	// Wait for every order to be paid and the injected crashes redelivered.
	deadline := time.Now().Add(o.timeout)
	for {
		n, err := svc.paidOrders(ctx)
		if err != nil {
			return err
		}
		if n == int64(o.orders) && svc.acked.Load()+cons.Stats().Succeeded >= int64(sends) {
			// Every order is paid and every message sent was acknowledged
			// (a delivery failed by an injected crash is not, until its
			// redelivery, a duplicate, is).
			break
		}
		if time.Now().After(deadline) {
			fmt.Printf("timed out: %d of %d orders paid\n", n, o.orders)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cons.Shutdown(sctx); err != nil {
		return err
	}
	svc.duplicates.Add(cons.Stats().Duplicates)
	return svc.reconcile(ctx, o.orders, sends, dupSends, regrants, expected)
}

func (s *payoutService) paidOrders(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Raw("SELECT COUNT(DISTINCT order_id) FROM " + s.prefix + "payouts").Scan(&n).Error
	return n, err
}

func (s *payoutService) reconcile(ctx context.Context, orders, sends, dupSends, regrants int, expected int64) error {
	var rows, doubles, total int64
	db := s.db.WithContext(ctx)
	if err := db.Raw("SELECT COUNT(*) FROM " + s.prefix + "payouts").Scan(&rows).Error; err != nil {
		return err
	}
	if err := db.Raw("SELECT COUNT(*) FROM (SELECT order_id FROM " + s.prefix + "payouts GROUP BY order_id HAVING COUNT(*) > 1) d").Scan(&doubles).Error; err != nil {
		return err
	}
	if err := db.Raw("SELECT COALESCE(SUM(balance), 0) FROM " + s.prefix + "wallets").Scan(&total).Error; err != nil {
		return err
	}
	paid, err := s.paidOrders(ctx)
	if err != nil {
		return err
	}
	fmt.Println("reconciliation")
	fmt.Printf("  orders                      %6d\n", orders)
	fmt.Printf("  messages sent               %6d  (%d duplicate sends, %d re-grants)\n", sends, dupSends, regrants)
	fmt.Printf("  deliveries                  %6d  (%d crashes after commit injected)\n", s.delivered.Load(), s.crashes.Load())
	fmt.Printf("  duplicates skipped          %6d\n", s.duplicates.Load())
	fmt.Printf("  payouts                     %6d  (orders paid %d)\n", rows, paid)
	fmt.Printf("  wallet total                %6d  (expected %d)\n", total, expected)
	fmt.Printf("  double payouts              %6d\n", doubles)
	switch {
	case doubles != 0:
		return fmt.Errorf("%d orders were paid twice", doubles)
	case paid != int64(orders):
		return fmt.Errorf("%d of %d orders paid", paid, orders)
	case total != expected:
		return fmt.Errorf("wallet total %d, expected %d", total, expected)
	}
	fmt.Println("OK: every red packet paid exactly once")
	return nil
}
