//go:build rocketmq

package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/middleware"
)

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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 16},
		RetryPolicy: fast,
	})
	w.send(t, "retry", "7300000000000000100", "pay")

	eventually(t, 15*time.Second, "one effect", func() bool { return len(w.effects(t)) == 1 })
	w.settled(t, "cg-retry", "retry")
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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: maxAttempts},
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
	w.settled(t, "cg-dead", "dead") // no retry left anywhere
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
		WithoutDedup:  true,
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
	w.settled(t, "cg-backstop", "backstop")
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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 16},
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
		if string(msg.Body) != "next" {
			return fmt.Errorf("unexpected delivery of %q", msg.Body)
		}
		return writeEffect(ctx, msg)
	})
	c2 := start(t, w, cfg)
	w.send(t, "graceful", "7300000000000000402", "next")
	eventually(t, 10*time.Second, "the next message", func() bool { return c2.Stats().Delivered >= 1 })
	w.settled(t, "cg-graceful", "graceful")
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
		Store: w.store, DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 16},
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

// TestLiveStartFrom shows Config.StartFrom on a topic with history, as a
// real broker answers a new group (no committed offset: the client's
// ConsumeFromWhere decides): the default, StartFromLast, skips what was
// stored before the group's first rebalance; StartFromFirst reads it;
// StartFromTimestamp starts at the first message stored at or after the
// time (to the second).
func TestLiveStartFrom(t *testing.T) {
	w := newWorld(t, rmqtest.Config{})
	w.send(t, "history", "7300000000000000701", "old")
	// The timestamp is read to the second: cut at the next one.
	oldAt := time.Now()
	for time.Now().Truncate(time.Second).Equal(oldAt.Truncate(time.Second)) {
		time.Sleep(10 * time.Millisecond)
	}
	cut := time.Now().Truncate(time.Second)
	w.send(t, "history", "7300000000000000702", "mid")

	var mu sync.Mutex
	got := map[string][]string{}
	starts := map[string]StartPosition{
		"cg-from-default":   {}, // the zero value: StartFromLast
		"cg-from-first":     StartFromFirst,
		"cg-from-timestamp": StartFromTimestamp(cut),
	}
	for group, from := range starts {
		c, err := New(Config{
			NameServers:   []string{w.b.Addr()},
			Group:         group,
			Subscriptions: []Subscription{{Topic: "history"}},
			WithoutDedup:  true,
			StartFrom:     from,
			Handler: idemq.HandlerFunc(func(_ context.Context, msg *idemq.Message) error {
				mu.Lock()
				defer mu.Unlock()
				got[group] = append(got[group], string(msg.Body))
				return nil
			}),
			Logger: quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
		// Its first rebalance read the start offsets of every queue.
		eventually(t, 10*time.Second, group+"'s first rebalance", func() bool {
			return w.b.PulledQueues(group, "history") == w.queues
		})
	}
	w.send(t, "history", "7300000000000000703", "new")
	for group := range starts {
		w.settled(t, group, "history")
	}
	mu.Lock()
	defer mu.Unlock()
	for group, want := range map[string]string{
		"cg-from-default":   "new",
		"cg-from-first":     "mid,new,old",
		"cg-from-timestamp": "mid,new",
	} {
		slices.Sort(got[group])
		if g := strings.Join(got[group], ","); g != want {
			t.Errorf("%s (%v) got %s, want %s", group, starts[group], g, want)
		}
	}
}
