// Command coupon is a coupon-issuing service built on idemq's lease mode.
//
// Issuing a coupon is an effect outside the database: a call to a coupon
// API. The consumer claims each message's key with an owner-fenced lease
// (sqldedup in lease mode, with the Redis fast path in front when -redis is
// given), calls the API, and marks the key done. The API receives the idemq
// message ID as its idempotency key, which covers lease mode's honest limit:
// a consumer that dies after the API call and before marking done has its
// message redelivered, and the API answers the replay with the coupon it
// already issued.
//
// A lease alone cannot stop a process that was paused past its lease (a
// long GC pause, a stopped VM) from calling the API after a successor took
// the key over. So the handler also sends the lease's fencing token
// (dedup.Fence), a number that grows with every new owner of the key, and
// the API remembers the highest token per idempotency key and refuses a
// lower one with 409 Conflict: a stale owner's late call is refused even
// if it slipped past its context check. The handler checks its context
// (which ends before the lease can expire) right before the call.
//
// The run injects duplicate sends, consumers that fail right after the API
// call, and late calls from a stale owner (a lower token), then prints a
// reconciliation: messages, API calls, replays the API absorbed, stale
// calls it refused, coupons issued, and double coupons, which must be 0.
//
// With no flags it runs on SQLite and the in-process test broker, with the
// coupon API on a loopback port:
//
//	go run ./examples/coupon
//	go run ./examples/coupon -redis 127.0.0.1:6379 -db postgres -dsn "host=... dbname=..."
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/dbopen"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/topics"
)

const (
	topic = "coupon_issue"
	group = "coupon_service"
)

// couponAPI is the external coupon service: it issues a coupon per
// idempotency key and answers a replayed key with the coupon it issued.
type couponAPI struct {
	mu      sync.Mutex
	byKey   map[string]string // idempotency key -> coupon code
	perUser map[string]int    // user+campaign -> coupons issued
	fences  map[string]uint64 // idempotency key -> highest fencing token seen
	calls   atomic.Int64
	replays atomic.Int64
	stale   atomic.Int64 // calls refused for a stale fencing token
}

type issueRequest struct {
	User     string `json:"user"`
	Campaign string `json:"campaign"`
}

func (a *couponAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	key := r.Header.Get("Idempotency-Key")
	if r.Method != http.MethodPost || key == "" {
		http.Error(w, "POST with an Idempotency-Key header", http.StatusBadRequest)
		return
	}
	var req issueRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.User == "" {
		http.Error(w, "bad request body", http.StatusBadRequest)
		return
	}
	fence, err := strconv.ParseUint(r.Header.Get("Fencing-Token"), 10, 64)
	if err != nil {
		http.Error(w, "a Fencing-Token header is required", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	if fence < a.fences[key] {
		// An owner that lost its lease: its successor already called.
		a.mu.Unlock()
		a.stale.Add(1)
		http.Error(w, "stale fencing token", http.StatusConflict)
		return
	}
	a.fences[key] = fence
	code, seen := a.byKey[key]
	if !seen {
		code = fmt.Sprintf("CPN-%s-%d", req.Campaign, len(a.byKey)+1)
		a.byKey[key] = code
		a.perUser[req.User+"/"+req.Campaign]++
	}
	a.mu.Unlock()
	if seen {
		a.replays.Add(1)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"code": code})
}

// issuer is the consumer side.
type issuer struct {
	api       string
	client    *http.Client
	delivered atomic.Int64
	failOnce  sync.Map
	failures  atomic.Int64
	staleSent atomic.Int64
}

// errStale is returned by call when the API refused the fencing token.
var errStale = errors.New("coupon API refused a stale fencing token")

// call asks the coupon API for the coupon of msg, with the message ID as
// the idempotency key and fence as the fencing token.
func (s *issuer) call(ctx context.Context, msg *idemq.Message, body []byte, fence uint64) error {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.api+"/coupons", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Idempotency-Key", msg.ID)
	hr.Header.Set("Fencing-Token", strconv.FormatUint(fence, 10))
	resp, err := s.client.Do(hr)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusConflict:
		return errStale
	case resp.StatusCode >= 500:
		return fmt.Errorf("coupon API: %s", resp.Status)
	case resp.StatusCode != http.StatusOK:
		return idemq.Permanent(fmt.Errorf("coupon API refused: %s", resp.Status))
	}
	return nil
}

// issue calls the coupon API with the message ID as the idempotency key and
// the lease's fencing token. For every 15th user it then fails once, as a
// consumer that died after the API call and before marking the key done.
// For every 10th user it also plays a stale owner: a late call with a lower
// token, which the API must refuse.
func (s *issuer) issue(ctx context.Context, msg *idemq.Message) error {
	s.delivered.Add(1)
	var req issueRequest
	if err := json.Unmarshal(msg.Body, &req); err != nil {
		return idemq.Permanent(fmt.Errorf("bad coupon request: %w", err))
	}
	body, _ := json.Marshal(req)
	fence, ok := dedup.Fence(ctx)
	if !ok {
		return idemq.Permanent(errors.New("no fencing token: the handler must run in lease mode"))
	}
	// Act only under a live lease: the context ends before the lease can
	// expire, and the token covers the rest.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.call(ctx, msg, body, fence); err != nil {
		if errors.Is(err, errStale) {
			return fmt.Errorf("%w: %w", dedup.ErrLeaseLost, err)
		}
		return err
	}
	n, _ := strconv.Atoi(msg.Property("user_no"))
	if n%10 == 0 && fence > 0 {
		// A predecessor paused past its lease wakes up and calls late.
		s.staleSent.Add(1)
		if err := s.call(ctx, msg, body, fence-1); !errors.Is(err, errStale) {
			return idemq.Permanent(fmt.Errorf("the coupon API accepted a stale owner's call (%v)", err))
		}
	}
	if n%15 == 0 {
		if _, again := s.failOnce.LoadOrStore(msg.ID, struct{}{}); !again {
			s.failures.Add(1)
			return errors.New("injected failure after the API call")
		}
	}
	return nil
}

func main() {
	users := flag.Int("users", 120, "number of users to issue a coupon to")
	dbName := flag.String("db", "sqlite", "database: sqlite, postgres or mysql")
	dsn := flag.String("dsn", "", "database DSN; for SQLite a file path (default: a SQLite file in a temporary directory)")
	namesrv := flag.String("namesrv", "", "RocketMQ name server host:port (default: the in-process test broker)")
	redisAddr := flag.String("redis", "", "Redis address for the dedup fast path (default: none)")
	timeout := flag.Duration("timeout", 90*time.Second, "give up waiting after this long")
	flag.Parse()
	if err := run(*users, *dbName, *dsn, *namesrv, *redisAddr, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "coupon:", err)
		os.Exit(1)
	}
}

func run(users int, dbName, dsn, namesrv, redisAddr string, timeout time.Duration) error {
	ctx := context.Background()
	// The injected failures are expected: log errors only.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	producer.SetClientLogger(log)

	api := &couponAPI{byKey: map[string]string{}, perUser: map[string]int{}, fences: map[string]uint64{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	db, cleanup, err := dbopen.Open(dbName, dsn)
	if err != nil {
		return err
	}
	defer cleanup()
	nameServers := []string{namesrv}
	if namesrv == "" {
		b, err := rmqtest.New(rmqtest.Config{TimeScale: 0.01, Logger: log})
		if err != nil {
			return err
		}
		defer b.Close()
		nameServers = []string{b.Addr()}
	}
	// Create the topic first, as on a real cluster: a name server answers
	// TOPIC_NOT_EXIST for a topic nobody created, and the consumer's Start
	// would fail. topics.Create is `mqadmin updateTopic`.
	tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
	err = topics.Create(tctx, nameServers, topic, topics.Config{Queues: 4})
	tcancel()
	if err != nil {
		return err
	}

	store, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: "coupon_idemq_", LeaseDuration: 10 * time.Second})
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	mode := "lease mode on " + dbName
	var rdb *redis.Client
	if redisAddr != "" {
		rdb = redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
		defer rdb.Close()
		mode += " with the Redis fast path at " + redisAddr
	}
	fmt.Printf("coupon: %d users, %s, coupon API at http://%s\n", users, mode, ln.Addr())

	is := &issuer{api: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 5 * time.Second}}
	cfg := consumer.Config{
		NameServers: nameServers, Group: group,
		Subscriptions:     []consumer.Subscription{{Topic: topic}},
		Store:             store, // dedup, attempts and dead letters
		Handler:           idemq.HandlerFunc(is.issue),
		ConsumeGoroutines: 8,
		// The grants are sent right after Start: a new group must not skip
		// what lands before its first rebalance.
		StartFrom: consumer.StartFromFirst,
		Logger:    log,
	}
	if rdb != nil {
		cfg.FastPath = rdb
	}
	cons, err := consumer.New(cfg)
	if err != nil {
		return err
	}
	if err := cons.Start(context.Background()); err != nil {
		return err
	}

	ids, err := msgid.NewGenerator(msgid.FixedNode(7), msgid.GeneratorConfig{})
	if err != nil {
		return err
	}
	prod, err := producer.New(producer.Config{NameServers: nameServers, Group: "campaign_service", IDSource: ids, Logger: log})
	if err != nil {
		return err
	}
	if err := prod.Start(ctx); err != nil {
		return err
	}
	defer prod.Shutdown(context.Background())

	sends := 0
	for i := 1; i <= users; i++ {
		body, _ := json.Marshal(issueRequest{User: fmt.Sprintf("user-%d", i), Campaign: "double11"})
		msg := &idemq.Message{Topic: topic, Body: body, Properties: map[string]string{"user_no": strconv.Itoa(i)}}
		copies := 1
		if i%4 == 0 {
			copies = 2 // a producer retry: same message, same ID
		}
		for c := 0; c < copies; c++ {
			if _, err := prod.SendSync(ctx, msg); err != nil {
				return fmt.Errorf("send for user %d: %w", i, err)
			}
			sends++
		}
	}

	deadline := time.Now().Add(timeout)
	for {
		api.mu.Lock()
		issued := len(api.byKey)
		api.mu.Unlock()
		if issued == users && cons.Stats().Duplicates >= int64(sends-users) {
			break
		}
		if time.Now().After(deadline) {
			fmt.Printf("timed out: %d of %d coupons issued\n", issued, users)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cons.Shutdown(sctx); err != nil {
		return err
	}

	api.mu.Lock()
	defer api.mu.Unlock()
	doubles := 0
	for _, n := range api.perUser {
		if n > 1 {
			doubles++
		}
	}
	fmt.Println("reconciliation")
	fmt.Printf("  users                       %6d\n", users)
	fmt.Printf("  messages sent               %6d\n", sends)
	fmt.Printf("  handler runs                %6d  (%d failures after the API call injected)\n", is.delivered.Load(), is.failures.Load())
	fmt.Printf("  duplicates skipped          %6d\n", cons.Stats().Duplicates)
	fmt.Printf("  coupon API calls            %6d  (%d replays answered by the idempotency key)\n", api.calls.Load(), api.replays.Load())
	fmt.Printf("  stale owners' calls refused %6d  (of %d late calls with a lower fencing token)\n", api.stale.Load(), is.staleSent.Load())
	fmt.Printf("  coupons issued              %6d\n", len(api.byKey))
	fmt.Printf("  double coupons              %6d\n", doubles)
	switch {
	case doubles != 0:
		return fmt.Errorf("%d users got two coupons", doubles)
	case len(api.byKey) != users:
		return fmt.Errorf("%d of %d coupons issued", len(api.byKey), users)
	case api.stale.Load() != is.staleSent.Load():
		return fmt.Errorf("%d of %d stale owners' calls refused", api.stale.Load(), is.staleSent.Load())
	}
	fmt.Println("OK: every coupon issued exactly once")
	return nil
}
