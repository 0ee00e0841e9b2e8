//go:build rocketmq_norace

// Live tests that cannot run under -race because of data races inside
// rocketmq-client-go (pinned v2.1.3-0.20251226070945-2173d070fd1b), not in
// idemq; scripts/test runs them with -tags rocketmq_norace and without
// -race:
//   - orderly consumers: processQueue.takeMessages reads the queue's tree
//     map while pullMessage writes it (consumer/process_queue.go);
//   - a consumer shut down mid-stream: rmqClient.Shutdown writes the
//     client's close flag while the consumer's own requests in flight
//     (pulls, offset commits, rebalances) read it (internal/client.go).

package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/middleware"
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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 16},
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
	// A stray redelivery would have to come before the group settles.
	w.settled(t, "cg-once", "once")

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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 16},
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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 16},
	}
	w.topic(t, "ordered")
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
	w.settled(t, "cg-orderly-restart", "ordered")
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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: maxAttempts},
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
	w.settled(t, "cg-orderly-poison", "poison")
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
				WithoutDedup:  true,
				Handler:       idemq.HandlerFunc(writeEffect),
				Orderly:       orderly,
				StartFrom:     StartFromFirst, // the message is sent before Start
				Logger:        quiet(),
			})
			if err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			if err := c.Start(context.Background()); err != nil {
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
