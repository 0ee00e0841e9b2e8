//go:build rocketmq

package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/integration/rmqtest"
)

// N messages, each sent twice with the same idemq ID, consumed by a
// consumer that is shut down mid-stream and replaced: exactly N effects.
func TestLiveExactlyOnceAcrossDuplicatesAndRestart(t *testing.T) {
	const n = 40
	w := newWorld(t, rmqtest.Config{})
	cfg := Config{
		Group:         "cg-once",
		Subscriptions: []Subscription{{Topic: "once"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			if err := writeEffect(ctx, msg); err != nil {
				return err
			}
			// Slow enough (SQLite serialises the transactions) for the
			// shutdown below to catch consumer 1 mid-stream.
			time.Sleep(10 * time.Millisecond)
			return nil
		}),
		Middleware: w.chain(t, 16),
	}
	id := func(i int) string { return strconv.Itoa(7_300_000_000_000 + i) }

	// First half, each message sent twice, before and while consumer 1 runs.
	for i := range n / 4 {
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
	}
	c1 := start(t, w, cfg)
	for i := n / 4; i < n/2; i++ {
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
	}
	eventually(t, 15*time.Second, "some effects", func() bool { return len(w.effects(t)) >= n/8 })
	if err := c1.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown consumer 1: %v", err)
	}
	s1 := c1.Stats()
	if s1.Succeeded >= n {
		t.Fatalf("consumer 1 acknowledged all %d first-half sends before its shutdown: not mid-stream", s1.Succeeded)
	}

	// Second half, again twice each, partly before consumer 2 starts.
	for i := n / 2; i < 3*n/4; i++ {
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
	}
	c2 := start(t, w, cfg)
	for i := 3 * n / 4; i < n; i++ {
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
		w.send(t, "once", id(i), "m"+strconv.Itoa(i))
	}
	// Every one of the 2n sends is acknowledged once consumed: wait until
	// the two consumers have acknowledged at least 2n deliveries.
	eventually(t, 30*time.Second, "all deliveries acknowledged", func() bool {
		return s1.Succeeded+c2.Stats().Succeeded >= 2*n
	})
	time.Sleep(300 * time.Millisecond) // let a stray redelivery show up

	effects := w.effects(t)
	keys := map[string]int{}
	for _, e := range effects {
		keys[e.K]++
	}
	if len(effects) != n || len(keys) != n {
		t.Fatalf("%d effects for %d keys, want exactly %d (stats 1: %+v, 2: %+v)", len(effects), len(keys), n, s1, c2.Stats())
	}
	for i := range n {
		if keys[id(i)] != 1 {
			t.Errorf("key %s has %d effects", id(i), keys[id(i)])
		}
	}
	s2 := c2.Stats()
	t.Logf("consumer 1: %+v; consumer 2: %+v", s1, s2)
	if s1.Delivered+s2.Delivered < 2*n {
		t.Errorf("only %d deliveries for %d sends", s1.Delivered+s2.Delivered, 2*n)
	}
}

// A handler that fails twice and then succeeds: one effect, at attempt 3,
// after two broker-side redeliveries.
func TestLiveRetryThenSuccess(t *testing.T) {
	w := newWorld(t, rmqtest.Config{TimeScale: 0.01})
	var calls atomic.Int32
	var attempts []int
	var topics []string
	var mu sync.Mutex
	c := start(t, w, Config{
		Group:         "cg-retry",
		Subscriptions: []Subscription{{Topic: "retry"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			mu.Lock()
			attempts = append(attempts, msg.Attempt)
			// The client itself restores the original topic of a retry
			// copy (read from %RETRY%cg-retry): check the raw message too.
			topics = append(topics, msg.Topic+"|"+msg.Raw.(*primitive.MessageExt).Topic)
			mu.Unlock()
			if err := writeEffect(ctx, msg); err != nil {
				return err
			}
			if calls.Add(1) <= 2 {
				return errors.New("downstream unavailable") // rolls the effect back
			}
			return nil
		}),
		Middleware:  w.chain(t, 16),
		RetryPolicy: fast,
	})
	w.send(t, "retry", "7300000000000000100", "pay")

	eventually(t, 15*time.Second, "one effect", func() bool { return len(w.effects(t)) == 1 })
	time.Sleep(300 * time.Millisecond)
	effects := w.effects(t)
	if len(effects) != 1 || effects[0].Attempt != 3 || effects[0].K != "7300000000000000100" {
		t.Fatalf("effects %+v, want one at attempt 3", effects)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Errorf("handler saw attempts %v, want [1 2 3]", attempts)
	}
	if want := []string{"retry|retry", "retry|retry", "retry|retry"}; !slices.Equal(topics, want) {
		t.Errorf("topics (idemq|raw) %v, want %v", topics, want)
	}
	if s := c.Stats(); s.Retried != 2 || s.Succeeded != 1 {
		t.Errorf("stats %+v", s)
	}
	if bs := w.b.Stats(); bs.SendBacks != 2 || bs.DeadLettered != 0 {
		t.Errorf("broker stats %+v, want 2 send-backs", bs)
	}
	// The failed attempts were recorded and cleared after the success.
	if a, err := w.store.Attempts(context.Background(), "cg-retry", "7300000000000000100"); err != nil || a.Count != 0 {
		t.Errorf("attempts record after success: %+v, %v", a, err)
	}
}

// Exhausted attempts and a permanent failure both end in the ledger's dead
// letters, and neither message is delivered again.
func TestLiveDeadLetters(t *testing.T) {
	w := newWorld(t, rmqtest.Config{TimeScale: 0.01})
	const maxAttempts = 3
	calls := map[string]int{}
	var mu sync.Mutex
	c := start(t, w, Config{
		Group:         "cg-dead",
		Subscriptions: []Subscription{{Topic: "dead"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			mu.Lock()
			calls[string(msg.Body)]++
			mu.Unlock()
			if string(msg.Body) == "cancelled" {
				return idemq.Permanent(errors.New("order cancelled"))
			}
			return errors.New("always failing")
		}),
		Middleware:  w.chain(t, maxAttempts),
		MaxAttempts: maxAttempts,
		RetryPolicy: fast,
	})
	w.send(t, "dead", "7300000000000000201", "poison")
	w.send(t, "dead", "7300000000000000202", "cancelled")

	ctx := context.Background()
	var dls []dedup.DeadLetter
	eventually(t, 15*time.Second, "two dead letters", func() bool {
		var err error
		dls, err = w.store.DeadLetters(ctx, dedup.DeadLetterFilter{Group: "cg-dead"})
		return err == nil && len(dls) == 2
	})
	time.Sleep(500 * time.Millisecond) // long enough for 10+ scaled retries
	mu.Lock()
	got := map[string]int{"poison": calls["poison"], "cancelled": calls["cancelled"]}
	mu.Unlock()
	if got["poison"] != maxAttempts || got["cancelled"] != 1 {
		t.Errorf("handler calls %v, want poison %d and cancelled 1", got, maxAttempts)
	}
	sort.Slice(dls, func(i, j int) bool { return dls[i].MessageID < dls[j].MessageID })
	if d := dls[0]; d.MessageID != "7300000000000000201" || d.Attempts != maxAttempts || d.Topic != "dead" ||
		string(d.Body) != "poison" || len(d.History) != maxAttempts {
		t.Errorf("exhausted dead letter %+v", d)
	}
	if d := dls[1]; d.MessageID != "7300000000000000202" || d.Attempts != 1 || d.Reason != "permanent: order cancelled" {
		t.Errorf("permanent dead letter %+v", d)
	}
	for _, d := range dls {
		if d.Properties[idemq.PropertyMessageID] != d.MessageID {
			t.Errorf("dead letter properties %v lack the message ID", d.Properties)
		}
		for k := range d.Properties {
			if IsSystemProperty(k) {
				t.Errorf("dead letter keeps system property %q", k)
			}
		}
	}
	if n := len(w.b.DLQ("cg-dead")); n != 0 {
		t.Errorf("broker %%DLQ%% holds %d messages; our dead letters should have come first", n)
	}
	if s := c.Stats(); s.Unburied != 0 {
		t.Errorf("stats %+v: nothing should be left unburied with DeadLetter in the chain", s)
	}
}

// Without a DeadLetter middleware, MaxAttempts still bounds the retries:
// it is the broker's MaxReconsumeTimes, and the broker's %DLQ% takes the
// message after MaxAttempts+1 deliveries. A permanent error is never
// acknowledged without a dead-letter destination (that would drop the
// message): it is retried like any failure, counted as unburied, and
// reaches the %DLQ% too.
func TestLiveBrokerDLQBackstopAndDiscard(t *testing.T) {
	w := newWorld(t, rmqtest.Config{TimeScale: 0.01})
	var poison, cancelled atomic.Int32
	c := start(t, w, Config{
		Group:         "cg-backstop",
		Subscriptions: []Subscription{{Topic: "backstop"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			if string(msg.Body) == "cancelled" {
				cancelled.Add(1)
				return idemq.Permanent(errors.New("cancelled"))
			}
			poison.Add(1)
			return errors.New("always failing")
		}),
		MaxAttempts: 2,
		RetryPolicy: fast,
	})
	w.send(t, "backstop", "7300000000000000301", "poison")
	w.send(t, "backstop", "7300000000000000302", "cancelled")
	eventually(t, 15*time.Second, "the broker's dead letters", func() bool { return len(w.b.DLQ("cg-backstop")) == 2 })
	if poison.Load() != 3 || cancelled.Load() != 3 {
		t.Errorf("deliveries: poison %d, cancelled %d (want 3 each = MaxAttempts+1)", poison.Load(), cancelled.Load())
	}
	ids := map[string]bool{}
	for _, m := range w.b.DLQ("cg-backstop") {
		ids[m.GetProperty(idemq.PropertyMessageID)] = true
	}
	if !ids["7300000000000000301"] || !ids["7300000000000000302"] {
		t.Errorf("broker dead letters are %v", ids)
	}
	if s := c.Stats(); s.Unburied != 3 || s.Retried != 6 || s.Succeeded != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Orderly consumption keeps the order of each sharding key through a
// failure: the failed message is redelivered in place after a pause, and
// no later message of its queue overtakes it.
func TestLiveOrderlyKeepsOrderThroughRetry(t *testing.T) {
	w := newWorld(t, rmqtest.Config{TimeScale: 0.01})
	const perKey = 6
	keys := []string{"order-a", "order-b", "order-c"}
	var failedOnce atomic.Bool
	var failAt time.Time
	var retriedAfter time.Duration
	var mu sync.Mutex
	c := start(t, w, Config{
		Group:         "cg-orderly",
		Subscriptions: []Subscription{{Topic: "orderly"}},
		Orderly:       true,
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			if string(msg.Body) == "order-a:2" {
				mu.Lock()
				if failedOnce.CompareAndSwap(false, true) {
					failAt = time.Now()
					mu.Unlock()
					return errors.New("transient")
				}
				retriedAfter = time.Since(failAt)
				mu.Unlock()
			}
			return writeEffect(ctx, msg)
		}),
		Middleware:      w.chain(t, 16),
		SuspendInterval: 200 * time.Millisecond,
		RetryPolicy:     fast,
	})
	for i := range perKey {
		for _, k := range keys {
			msg := &idemq.Message{Topic: "orderly", Body: []byte(k + ":" + strconv.Itoa(i))}
			if _, err := w.p.SendOrdered(context.Background(), msg, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, 20*time.Second, "all effects", func() bool { return len(w.effects(t)) == perKey*len(keys) })
	seen := map[string][]string{}
	for _, e := range w.effects(t) {
		k := e.Body[:len("order-a")]
		seen[k] = append(seen[k], e.Body)
		if e.Body == "order-a:2" && e.Attempt != 2 {
			t.Errorf("order-a:2 succeeded at attempt %d, want 2", e.Attempt)
		}
	}
	for _, k := range keys {
		var want []string
		for i := range perKey {
			want = append(want, k+":"+strconv.Itoa(i))
		}
		if !slices.Equal(seen[k], want) {
			t.Errorf("%s committed in order %v, want %v", k, seen[k], want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !failedOnce.Load() || retriedAfter < 200*time.Millisecond {
		t.Errorf("retry came %v after the failure, want a real pause of at least SuspendInterval (200ms)", retriedAfter)
	}
	if s := c.Stats(); s.Retried != 1 {
		t.Errorf("stats %+v", s)
	}
	if n := w.b.Stats().SendBacks; n != 0 {
		t.Errorf("%d send-backs: an orderly retry must stay in place", n)
	}
}

// Shutdown waits for a slow handler in flight: its effect commits, its
// offset is committed, and a new consumer of the group does not run it
// again.
func TestLiveGracefulShutdownWaitsForSlowHandler(t *testing.T) {
	w := newWorld(t, rmqtest.Config{QueuesPerTopic: 1})
	entered := make(chan struct{})
	var done atomic.Bool
	cfg := Config{
		Group:         "cg-graceful",
		Subscriptions: []Subscription{{Topic: "graceful"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			if string(msg.Body) == "slow" {
				close(entered)
				select {
				case <-time.After(1500 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
				done.Store(true)
			}
			return writeEffect(ctx, msg)
		}),
		Middleware: w.chain(t, 16),
	}
	c := start(t, w, cfg)
	w.send(t, "graceful", "7300000000000000401", "slow")
	<-entered

	begin := time.Now()
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := time.Since(begin)
	if !done.Load() {
		t.Fatal("Shutdown returned before the slow handler finished")
	}
	t.Logf("Shutdown took %v with a slow handler in flight", took)
	if effects := w.effects(t); len(effects) != 1 {
		t.Fatalf("effects %+v", effects)
	}
	eventually(t, 3*time.Second, "the committed offset", func() bool {
		return w.b.ConsumerOffset("cg-graceful", "graceful", 0) == 1
	})
	if s := c.Stats(); s.Succeeded != 1 || s.Retried != 0 {
		t.Errorf("stats %+v", s)
	}

	// A new consumer of the group starts after the message.
	cfg.Handler = idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		return fmt.Errorf("unexpected delivery of %q", msg.Body)
	})
	c2 := start(t, w, cfg)
	w.send(t, "graceful", "7300000000000000402", "next")
	eventually(t, 10*time.Second, "the next message", func() bool { return c2.Stats().Delivered >= 1 })
	time.Sleep(300 * time.Millisecond)
	if s := c2.Stats(); s.Delivered != 1 {
		t.Errorf("second consumer stats %+v: the slow message came back", s)
	}
}

// Shutdown's deadline cancels a handler that would run too long; its
// message is redelivered to the next consumer and processed once.
func TestLiveShutdownDeadlineRedelivers(t *testing.T) {
	w := newWorld(t, rmqtest.Config{QueuesPerTopic: 1})
	entered := make(chan struct{}, 1)
	cfg := Config{
		Group:         "cg-deadline",
		Subscriptions: []Subscription{{Topic: "deadline"}},
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}),
		Middleware:      w.chain(t, 16),
		ShutdownTimeout: 200 * time.Millisecond,
	}
	c := start(t, w, cfg)
	w.send(t, "deadline", "7300000000000000501", "stuck")
	<-entered
	if err := c.Shutdown(context.Background()); !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("Shutdown = %v, want ErrShutdownTimeout", err)
	}
	cfg.Handler = idemq.HandlerFunc(writeEffect)
	start(t, w, cfg)
	eventually(t, 15*time.Second, "the redelivered message's effect", func() bool { return len(w.effects(t)) == 1 })
	if e := w.effects(t)[0]; e.K != "7300000000000000501" {
		t.Errorf("effect %+v", e)
	}
	// The cut-short attempt was not recorded as a failure.
	if a, _ := w.store.Attempts(context.Background(), "cg-deadline", "7300000000000000501"); a.Count != 0 {
		t.Errorf("attempts %+v", a)
	}
}

// TestLiveStartLatency reports how long Start takes against the test
// broker (concurrent and orderly). It asserts only that Start succeeds.
func TestLiveStartLatency(t *testing.T) {
	w := newWorld(t, rmqtest.Config{})
	for _, orderly := range []bool{false, true} {
		var took, first []time.Duration
		w.send(t, "latency", strconv.Itoa(7_300_000_000_000_600+boolInt(orderly)), "ping")
		for i := range 5 {
			c, err := New(Config{
				NameServers:   []string{w.b.Addr()},
				Group:         fmt.Sprintf("cg-latency-%v-%d", orderly, i),
				Subscriptions: []Subscription{{Topic: "latency"}},
				Handler:       idemq.HandlerFunc(writeEffect),
				Orderly:       orderly,
				Logger:        quiet(),
			})
			if err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			took = append(took, time.Since(begin))
			// The message sent before Start: how long until it is handled.
			eventually(t, 10*time.Second, "the first delivery", func() bool { return c.Stats().Delivered >= 1 })
			first = append(first, time.Since(begin))
			if err := c.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(took)
		slices.Sort(first)
		t.Logf("orderly=%v: Start returned after min %v, median %v, max %v; first message handled after min %v, median %v, max %v",
			orderly, took[0], took[len(took)/2], took[len(took)-1], first[0], first[len(first)/2], first[len(first)-1])
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// An orderly consumer shut down mid-stream and replaced: every message is
// processed once, and each key's messages commit in order across the
// hand-over (the refused callbacks run no handler, and the queue lock is
// released only after the handlers in flight finished).
func TestLiveOrderlyShutdownMidStream(t *testing.T) {
	w := newWorld(t, rmqtest.Config{})
	const perKey = 15
	keys := []string{"k1", "k2", "k3", "k4"}
	cfg := Config{
		Group:         "cg-orderly-restart",
		Subscriptions: []Subscription{{Topic: "ordered"}},
		Orderly:       true,
		BatchSize:     2,
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			if err := writeEffect(ctx, msg); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
			return nil
		}),
		Middleware: w.chain(t, 16),
	}
	for i := range perKey {
		for _, k := range keys {
			msg := &idemq.Message{Topic: "ordered", Body: []byte(k + ":" + fmt.Sprintf("%02d", i))}
			if _, err := w.p.SendOrdered(context.Background(), msg, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	c1 := start(t, w, cfg)
	eventually(t, 15*time.Second, "some effects", func() bool { return len(w.effects(t)) >= 8 })
	if err := c1.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	s1 := c1.Stats()
	if s1.Succeeded >= perKey*int64(len(keys)) {
		t.Fatalf("consumer 1 finished everything (%+v): not mid-stream", s1)
	}
	c2 := start(t, w, cfg)
	eventually(t, 30*time.Second, "all effects", func() bool { return len(w.effects(t)) == perKey*len(keys) })
	time.Sleep(300 * time.Millisecond)
	seen := map[string][]string{}
	for _, e := range w.effects(t) {
		k := e.Body[:2]
		seen[k] = append(seen[k], e.Body)
	}
	for _, k := range keys {
		var want []string
		for i := range perKey {
			want = append(want, k+":"+fmt.Sprintf("%02d", i))
		}
		if !slices.Equal(seen[k], want) {
			t.Errorf("%s committed %v, want %v", k, seen[k], want)
		}
	}
	t.Logf("consumer 1: %+v; consumer 2: %+v", s1, c2.Stats())
}

// In orderly mode a poison message is retried in place with a growing
// Attempt until the DeadLetter middleware buries it; the messages behind it
// in its queue then proceed, in order.
func TestLiveOrderlyPoisonIsDeadLettered(t *testing.T) {
	w := newWorld(t, rmqtest.Config{QueuesPerTopic: 1})
	const maxAttempts = 3
	var attempts []int
	var mu sync.Mutex
	c := start(t, w, Config{
		Group:         "cg-orderly-poison",
		Subscriptions: []Subscription{{Topic: "poison"}},
		Orderly:       true,
		Handler: idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			if string(msg.Body) == "k:1" {
				mu.Lock()
				attempts = append(attempts, msg.Attempt)
				mu.Unlock()
				return errors.New("poison")
			}
			return writeEffect(ctx, msg)
		}),
		Middleware:      w.chain(t, maxAttempts),
		MaxAttempts:     maxAttempts,
		SuspendInterval: 20 * time.Millisecond,
		RetryPolicy:     fast,
	})
	for i := range 4 {
		msg := &idemq.Message{Topic: "poison", Body: []byte("k:" + strconv.Itoa(i))}
		if _, err := w.p.SendOrdered(context.Background(), msg, "k"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "three effects", func() bool { return len(w.effects(t)) == 3 })
	time.Sleep(300 * time.Millisecond)
	var bodies []string
	for _, e := range w.effects(t) {
		bodies = append(bodies, e.Body)
	}
	if want := []string{"k:0", "k:2", "k:3"}; !slices.Equal(bodies, want) {
		t.Errorf("effects %v, want %v", bodies, want)
	}
	mu.Lock()
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Errorf("poison attempts %v, want [1 2 3]", attempts)
	}
	mu.Unlock()
	dls, err := w.store.DeadLetters(context.Background(), dedup.DeadLetterFilter{Group: "cg-orderly-poison"})
	if err != nil || len(dls) != 1 || string(dls[0].Body) != "k:1" || dls[0].Attempts != maxAttempts {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	if n := len(w.b.DLQ("cg-orderly-poison")); n != 0 {
		t.Errorf("broker DLQ holds %d", n)
	}
	if s := c.Stats(); s.Retried != maxAttempts-1 {
		t.Errorf("stats %+v", s)
	}
}
