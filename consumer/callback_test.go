package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	rmq "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/middleware"
)

// noJitter is a deterministic retry policy: 1s, 2s, 4s, ... capped at 2h.
var noJitter = middleware.RetryPolicy{Jitter: -1}

// newTestConsumer builds a Consumer that is never started: its callback is
// called directly, as the client would.
func newTestConsumer(t *testing.T, h idemq.HandlerFunc, edit func(*Config)) *Consumer {
	t.Helper()
	cfg := Config{
		NameServers:   []string{"127.0.0.1:9876"},
		Group:         "g1",
		Subscriptions: []Subscription{{Topic: "orders"}},
		Handler:       h,
		// The chain is Config.Middleware alone: these tests are of the
		// consumer's mapping of results, not of the chain.
		CustomChain: []idemq.Middleware{passThrough},
		RetryPolicy: noJitter,
		Logger:      slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
	return c
}

// passThrough is a middleware that does nothing.
func passThrough(next idemq.Handler) idemq.Handler { return next }

// concurrentCtx is the context the client builds for a concurrent callback.
func concurrentCtx(msgs []*primitive.MessageExt) (context.Context, *primitive.ConsumeConcurrentlyContext) {
	ctx := primitive.WithConsumerCtx(context.Background(), &primitive.ConsumeMessageContext{
		Properties: map[string]string{}, ConsumerGroup: "g1", Msgs: msgs,
	})
	ctx = primitive.WithMethod(ctx, primitive.ConsumerPush)
	cc := primitive.NewConsumeConcurrentlyContext()
	return primitive.WithConcurrentlyCtx(ctx, cc), cc
}

// orderlyCtx is the context the client builds for an orderly callback.
func orderlyCtx(msgs []*primitive.MessageExt) (context.Context, *primitive.ConsumeOrderlyContext) {
	ctx := primitive.WithConsumerCtx(context.Background(), &primitive.ConsumeMessageContext{
		Properties: map[string]string{}, ConsumerGroup: "g1", Msgs: msgs,
	})
	oc := primitive.NewConsumeOrderlyContext()
	return primitive.WithOrderlyCtx(ctx, oc), oc
}

func extWithID(id string, reconsume int32) *primitive.MessageExt {
	ext := newExt("orders", []byte("body-"+id), map[string]string{idemq.PropertyMessageID: id})
	ext.ReconsumeTimes = reconsume
	return ext
}

func TestConcurrentResultMapping(t *testing.T) {
	tests := []struct {
		name      string
		reconsume int32
		err       error
		panicWith any
		mws       []idemq.Middleware
		want      rmq.ConsumeResult
		wantLevel int // DelayLevelWhenNextConsume; 0 = untouched
		wantStats Stats
	}{
		{
			name:      "nil acknowledges",
			want:      rmq.ConsumeSuccess,
			wantStats: Stats{Delivered: 1, Succeeded: 1, Processed: 1},
		},
		{
			name:      "error on attempt 1 retries after 1s",
			err:       errors.New("db down"),
			want:      rmq.ConsumeRetryLater,
			wantLevel: 1, // 1s
			wantStats: Stats{Delivered: 1, Retried: 1},
		},
		{
			name:      "error on attempt 4 retries after 8s",
			reconsume: 3,
			err:       errors.New("db down"),
			want:      rmq.ConsumeRetryLater,
			wantLevel: 3, // 8s rounds up to 10s
			wantStats: Stats{Delivered: 1, Retried: 1},
		},
		{
			name:      "RetryAfter is a floor",
			err:       idemq.RetryAfter(40*time.Second, errors.New("rate limited")),
			want:      rmq.ConsumeRetryLater,
			wantLevel: 5, // 1m
			wantStats: Stats{Delivered: 1, Retried: 1},
		},
		{
			// No dead-letter destination: acknowledging would drop it.
			name:      "permanent without DeadLetter is kept and retried",
			err:       idemq.Permanent(errors.New("cancelled order")),
			want:      rmq.ConsumeRetryLater,
			wantLevel: 1,
			wantStats: Stats{Delivered: 1, Retried: 1, Unburied: 1},
		},
		{
			name:      "wrapped permanent is kept and retried",
			err:       fmt.Errorf("grant: %w", idemq.Permanent(errors.New("bad"))),
			want:      rmq.ConsumeRetryLater,
			wantLevel: 1,
			wantStats: Stats{Delivered: 1, Retried: 1, Unburied: 1},
		},
		{
			name:      "panic without Recover middleware retries",
			panicWith: "boom",
			want:      rmq.ConsumeRetryLater,
			wantLevel: 1,
			wantStats: Stats{Delivered: 1, Retried: 1, Panics: 1},
		},
		{
			name:      "panic of a Permanent value is not permanent",
			panicWith: idemq.Permanent(errors.New("x")),
			want:      rmq.ConsumeRetryLater,
			wantLevel: 1,
			wantStats: Stats{Delivered: 1, Retried: 1, Panics: 1},
		},
		{
			name:      "panic recovered by the Recover middleware retries",
			panicWith: "boom",
			mws:       []idemq.Middleware{middleware.Recover()},
			want:      rmq.ConsumeRetryLater,
			wantLevel: 1,
			wantStats: Stats{Delivered: 1, Retried: 1, Panics: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls int
			c := newTestConsumer(t, func(ctx context.Context, msg *idemq.Message) error {
				calls++
				if tt.panicWith != nil {
					panic(tt.panicWith)
				}
				return tt.err
			}, func(cfg *Config) { cfg.Middleware = tt.mws })
			msgs := []*primitive.MessageExt{extWithID("101", tt.reconsume)}
			ctx, cc := concurrentCtx(msgs)
			got, err := c.consume(ctx, msgs...)
			if err != nil {
				t.Fatalf("callback returned error %v: the client would only log it", err)
			}
			if got != tt.want {
				t.Errorf("result = %v, want %v", got, tt.want)
			}
			if cc.DelayLevelWhenNextConsume != tt.wantLevel {
				t.Errorf("DelayLevelWhenNextConsume = %d, want %d", cc.DelayLevelWhenNextConsume, tt.wantLevel)
			}
			if calls != 1 {
				t.Errorf("handler called %d times", calls)
			}
			if s := c.Stats(); s != tt.wantStats {
				t.Errorf("stats = %+v, want %+v", s, tt.wantStats)
			}
		})
	}
}

func TestOrderlyResultMapping(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		reconsume int32
		want      rmq.ConsumeResult
		wantPause int // SuspendCurrentQueueTimeMillis; -1 = untouched
	}{
		{name: "nil acknowledges", want: rmq.ConsumeSuccess, wantPause: -1},
		{name: "error pauses at least SuspendInterval", err: errors.New("x"), want: rmq.SuspendCurrentQueueAMoment, wantPause: 500},
		{name: "later attempt pauses per retry policy", err: errors.New("x"), reconsume: 2, want: rmq.SuspendCurrentQueueAMoment, wantPause: 800},
		{name: "RetryAfter raises the pause", err: idemq.RetryAfter(2*time.Second, nil), want: rmq.SuspendCurrentQueueAMoment, wantPause: 2000},
		{name: "pause capped at MaxSuspendInterval", err: idemq.RetryAfter(time.Hour, nil), want: rmq.SuspendCurrentQueueAMoment, wantPause: 3000},
		{name: "permanent without DeadLetter pauses, never acknowledged", err: idemq.Permanent(nil), want: rmq.SuspendCurrentQueueAMoment, wantPause: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestConsumer(t, func(context.Context, *idemq.Message) error { return tt.err }, func(cfg *Config) {
				cfg.Orderly = true
				cfg.SuspendInterval = 500 * time.Millisecond
				cfg.MaxSuspendInterval = 3 * time.Second
				cfg.RetryPolicy = middleware.RetryPolicy{Initial: 200 * time.Millisecond, Jitter: -1}
			})
			msgs := []*primitive.MessageExt{extWithID("5", tt.reconsume)}
			ctx, oc := orderlyCtx(msgs)
			got, err := c.consume(ctx, msgs...)
			if err != nil || got != tt.want {
				t.Fatalf("result = %v, %v; want %v, nil", got, err, tt.want)
			}
			if oc.SuspendCurrentQueueTimeMillis != tt.wantPause {
				t.Errorf("SuspendCurrentQueueTimeMillis = %d, want %d", oc.SuspendCurrentQueueTimeMillis, tt.wantPause)
			}
		})
	}
}

func TestBatch(t *testing.T) {
	// Message "2" fails with a RetryAfter of 30s, "4" with a plain error.
	fail := map[string]error{
		"2": idemq.RetryAfter(30*time.Second, errors.New("busy")),
		"4": errors.New("down"),
	}
	batch := func() []*primitive.MessageExt {
		var msgs []*primitive.MessageExt
		for i := 1; i <= 5; i++ {
			msgs = append(msgs, extWithID(strconv.Itoa(i), 0))
		}
		return msgs
	}

	t.Run("concurrent runs every message and retries the batch", func(t *testing.T) {
		var seen []string
		c := newTestConsumer(t, func(_ context.Context, msg *idemq.Message) error {
			seen = append(seen, msg.ID)
			return fail[msg.ID]
		}, func(cfg *Config) { cfg.BatchSize = 5 })
		msgs := batch()
		ctx, cc := concurrentCtx(msgs)
		got, _ := c.consume(ctx, msgs...)
		if got != rmq.ConsumeRetryLater {
			t.Fatalf("result %v, want RetryLater", got)
		}
		if want := []string{"1", "2", "3", "4", "5"}; !slices.Equal(seen, want) {
			t.Errorf("handled %v, want %v", seen, want)
		}
		if cc.DelayLevelWhenNextConsume != 4 { // the longest: 30s
			t.Errorf("delay level %d, want 4 (30s)", cc.DelayLevelWhenNextConsume)
		}
		if s := c.Stats(); s.Delivered != 5 || s.Succeeded != 3 || s.Retried != 2 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("concurrent batch of successes acknowledges", func(t *testing.T) {
		c := newTestConsumer(t, func(context.Context, *idemq.Message) error { return nil }, func(cfg *Config) { cfg.BatchSize = 5 })
		msgs := batch()
		ctx, _ := concurrentCtx(msgs)
		if got, _ := c.consume(ctx, msgs...); got != rmq.ConsumeSuccess {
			t.Fatalf("result %v", got)
		}
	})

	t.Run("orderly stops at the first failure", func(t *testing.T) {
		var seen []string
		c := newTestConsumer(t, func(_ context.Context, msg *idemq.Message) error {
			seen = append(seen, msg.ID)
			return fail[msg.ID]
		}, func(cfg *Config) { cfg.BatchSize = 5; cfg.Orderly = true })
		msgs := batch()
		ctx, oc := orderlyCtx(msgs)
		got, _ := c.consume(ctx, msgs...)
		if got != rmq.SuspendCurrentQueueAMoment {
			t.Fatalf("result %v, want SuspendCurrentQueueAMoment", got)
		}
		if want := []string{"1", "2"}; !slices.Equal(seen, want) {
			t.Errorf("handled %v, want %v", seen, want)
		}
		if oc.SuspendCurrentQueueTimeMillis != 30000 {
			t.Errorf("pause %d ms, want 30000", oc.SuspendCurrentQueueTimeMillis)
		}
	})

	t.Run("each message gets its own ID and Dedup.KeyFunc key", func(t *testing.T) {
		var keys []string
		c := newTestConsumer(t, func(_ context.Context, msg *idemq.Message) error {
			keys = append(keys, msg.Key)
			return nil
		}, func(cfg *Config) {
			cfg.BatchSize = 5
			cfg.CustomChain = nil
			cfg.Store = sqliteStore(t)
			cfg.Dedup.KeyFunc = func(msg *idemq.Message) (string, error) {
				if msg.ID == "3" {
					return msg.ID, nil
				}
				return "order:" + msg.ID, nil
			}
		})
		msgs := batch()
		ctx, _ := concurrentCtx(msgs)
		c.consume(ctx, msgs...)
		if want := []string{"order:1", "order:2", "3", "order:4", "order:5"}; !slices.Equal(keys, want) {
			t.Errorf("keys %v, want %v", keys, want)
		}
	})
}

func TestPanicOutsideChainIsRecovered(t *testing.T) {
	for _, orderly := range []bool{false, true} {
		t.Run(fmt.Sprintf("orderly=%v", orderly), func(t *testing.T) {
			called := false
			c := newTestConsumer(t, func(context.Context, *idemq.Message) error { called = true; return nil }, func(cfg *Config) {
				cfg.Orderly = orderly
				cfg.Middleware = []idemq.Middleware{func(idemq.Handler) idemq.Handler {
					return idemq.HandlerFunc(func(context.Context, *idemq.Message) error { panic("bad middleware") })
				}}
			})
			msgs := []*primitive.MessageExt{extWithID("1", 0)}
			var got rmq.ConsumeResult
			if orderly {
				ctx, _ := orderlyCtx(msgs)
				got, _ = c.consume(ctx, msgs...)
			} else {
				ctx, _ := concurrentCtx(msgs)
				got, _ = c.consume(ctx, msgs...)
			}
			if got == rmq.ConsumeSuccess || called {
				t.Fatalf("result %v, handler called %v: want a retry without the handler", got, called)
			}
			if c.Stats().Panics != 1 {
				t.Errorf("panics %d", c.Stats().Panics)
			}
		})
	}
}

func TestHandlerSeesClientContextAndMessage(t *testing.T) {
	var got *idemq.Message
	var group string
	c := newTestConsumer(t, func(ctx context.Context, msg *idemq.Message) error {
		got = msg
		if mc, ok := primitive.GetConsumerCtx(ctx); ok {
			group = mc.ConsumerGroup
		}
		return nil
	}, nil)
	msgs := []*primitive.MessageExt{extWithID("77", 1)}
	ctx, _ := concurrentCtx(msgs)
	c.consume(ctx, msgs...)
	if got == nil || got.ID != "77" || got.Group != "g1" || got.Attempt != 2 || got.Raw != msgs[0] {
		t.Fatalf("handler got %+v", got)
	}
	if group != "g1" {
		t.Errorf("client's consumer context not passed on (group %q)", group)
	}
}

func TestShutdownRefusesNewCallbacks(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	for _, orderly := range []bool{false, true} {
		c := newTestConsumer(t, func(context.Context, *idemq.Message) error {
			mu.Lock()
			calls++
			mu.Unlock()
			return nil
		}, func(cfg *Config) { cfg.Orderly = orderly })
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		msgs := []*primitive.MessageExt{extWithID("1", 0), extWithID("2", 0)}
		want := rmq.ConsumeRetryLater
		var got rmq.ConsumeResult
		if orderly {
			want = rmq.SuspendCurrentQueueAMoment
			ctx, _ := orderlyCtx(msgs)
			got, _ = c.consume(ctx, msgs...)
		} else {
			ctx, _ := concurrentCtx(msgs)
			got, _ = c.consume(ctx, msgs...)
		}
		if got != want {
			t.Errorf("orderly=%v: result %v after Shutdown, want %v", orderly, got, want)
		}
		if s := c.Stats(); s.Refused != 2 || s.Delivered != 0 {
			t.Errorf("orderly=%v: stats %+v", orderly, s)
		}
		if err := c.Start(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Shutdown = %v, want ErrClosed", err)
		}
	}
	if calls != 0 {
		t.Fatalf("handler ran %d times after Shutdown", calls)
	}
}

func TestShutdownWaitsForHandlersInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var shutdownDone sync.WaitGroup
	var returnedEarly bool
	var mu sync.Mutex
	shutdownReturned := false

	c := newTestConsumer(t, func(ctx context.Context, msg *idemq.Message) error {
		if msg.ID != "slow" {
			t.Errorf("handler ran for %q after Shutdown began", msg.ID)
			return nil
		}
		close(entered)
		<-release
		mu.Lock()
		returnedEarly = shutdownReturned
		mu.Unlock()
		return nil
	}, nil)

	slow := []*primitive.MessageExt{extWithID("slow", 0)}
	ctx, _ := concurrentCtx(slow)
	results := make(chan rmq.ConsumeResult, 2)
	go func() {
		r, _ := c.consume(ctx, slow...)
		results <- r
	}()
	<-entered

	shutdownDone.Add(1)
	var shutdownErr error
	go func() {
		defer shutdownDone.Done()
		shutdownErr = c.Shutdown(context.Background())
		mu.Lock()
		shutdownReturned = true
		mu.Unlock()
	}()
	for !c.isStopping() {
		time.Sleep(time.Millisecond)
	}
	// A callback arriving now is refused; it returns once the client
	// would be shut down.
	late := []*primitive.MessageExt{extWithID("late", 0)}
	lctx, _ := concurrentCtx(late)
	go func() {
		r, _ := c.consume(lctx, late...)
		results <- r
	}()

	close(release)
	shutdownDone.Wait()
	if shutdownErr != nil {
		t.Fatalf("Shutdown: %v", shutdownErr)
	}
	if returnedEarly {
		t.Fatal("Shutdown returned while a handler was still running")
	}
	got := []rmq.ConsumeResult{<-results, <-results}
	slices.Sort(got)
	if want := []rmq.ConsumeResult{rmq.ConsumeSuccess, rmq.ConsumeRetryLater}; !slices.Equal(got, want) {
		t.Errorf("results %v, want the slow one acknowledged and the late one refused", got)
	}
	if s := c.Stats(); s.Delivered != 1 || s.Succeeded != 1 || s.Refused != 1 {
		t.Errorf("stats %+v", s)
	}
	// Idempotent: a second call returns the first one's result at once.
	if err := c.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestShutdownDeadlineCancelsHandlers(t *testing.T) {
	entered := make(chan struct{})
	c := newTestConsumer(t, func(ctx context.Context, msg *idemq.Message) error {
		close(entered)
		<-ctx.Done()
		// Even a permanent error from a cancelled handler must not be
		// acknowledged: it failed because of the shutdown, not on its own.
		return idemq.Permanent(ctx.Err())
	}, nil)
	msgs := []*primitive.MessageExt{extWithID("1", 0)}
	ctx, _ := concurrentCtx(msgs)
	result := make(chan rmq.ConsumeResult, 1)
	go func() {
		r, _ := c.consume(ctx, msgs...)
		result <- r
	}()
	<-entered

	sctx, cancel := context.WithCancel(context.Background())
	cancel() // deadline already passed: do not wait at all
	err := c.Shutdown(sctx)
	if !errors.Is(err, ErrShutdownTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want ErrShutdownTimeout wrapping context.Canceled", err)
	}
	if r := <-result; r != rmq.ConsumeRetryLater {
		t.Errorf("cancelled handler's result %v, want RetryLater", r)
	}
	if s := c.Stats(); s.Unburied != 0 || s.Retried != 1 {
		t.Errorf("stats %+v", s)
	}
}

// pauses records the consumer-wide pauses of in-place retries instead of
// sleeping, and can end one early (as Shutdown would).
type pauses struct {
	mu   sync.Mutex
	got  []time.Duration
	stop func(n int) bool // called with the pause's index; true ends the wait
}

func (p *pauses) install(c *Consumer) {
	c.outage.sleep = func(_ context.Context, d time.Duration, _ func() bool) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.got = append(p.got, d)
		return p.stop == nil || !p.stop(len(p.got)-1)
	}
}

func (p *pauses) all() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// A delivery whose store could not decide (unreachable, or a conflict it
// gave up on) is retried in place after a consumer-wide pause that doubles
// (100ms, 200ms, 400ms ... 10s) and is reset by a success: the message is
// not handed back to the broker, so no attempt is counted, and a later
// failure starts from 100ms again.
func TestInfrastructureFailureRetriedInPlace(t *testing.T) {
	var calls int
	var attempts []int
	var failNext int
	var failWith error
	c := newTestConsumer(t, func(ctx context.Context, msg *idemq.Message) error {
		calls++
		attempts = append(attempts, msg.Attempt)
		if failNext > 0 {
			failNext--
			return failWith
		}
		return nil
	}, nil)
	p := &pauses{}
	p.install(c)
	failNext, failWith = 3, dedup.Unavailable(errors.New("dial tcp 127.0.0.1:5432: connection refused"))
	msgs := []*primitive.MessageExt{extWithID("201", 0)}
	ctx, cc := concurrentCtx(msgs)
	if got, _ := c.consume(ctx, msgs...); got != rmq.ConsumeSuccess || cc.DelayLevelWhenNextConsume != 0 {
		t.Fatalf("result %v level %d, want success without a send-back", got, cc.DelayLevelWhenNextConsume)
	}
	if calls != 4 || !slices.Equal(attempts, []int{1, 1, 1, 1}) {
		t.Fatalf("handler calls %d with attempts %v, want 4 runs of attempt 1", calls, attempts)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	if got := p.all(); !slices.Equal(got, want) {
		t.Fatalf("pauses %v, want %v", got, want)
	}
	if s := c.Stats(); s != (Stats{Delivered: 1, Succeeded: 1, Processed: 1, OutageRetries: 3}) {
		t.Errorf("stats %+v", s)
	}
	// The success reset the pause: a new failure starts from 100ms, and a
	// conflict the store gave up on is treated the same way.
	failNext, failWith = 1, dedup.Conflict(errors.New("Error 1213: Deadlock found"))
	msgs = []*primitive.MessageExt{extWithID("202", 0)}
	ctx, _ = concurrentCtx(msgs)
	if got, _ := c.consume(ctx, msgs...); got != rmq.ConsumeSuccess {
		t.Fatalf("result %v", got)
	}
	if got := p.all(); len(got) != 4 || got[3] != 100*time.Millisecond {
		t.Fatalf("pauses %v, want a fourth of 100ms after the success", got)
	}
}

// The pause is consumer-wide: while the store is down, every delivery
// waits on one growing pause (up to 10s), so an outage pauses consumption
// instead of burning attempts; if Shutdown begins during a pause, the
// delivery is handed back (not acknowledged).
func TestOutagePausesConsumption(t *testing.T) {
	c := newTestConsumer(t, func(ctx context.Context, msg *idemq.Message) error {
		return dedup.Unavailable(errors.New("connection reset by peer"))
	}, nil)
	// The first delivery grows the pause to 10s and is interrupted at its
	// 12th pause; the second starts where the first left off and is
	// interrupted at once.
	p := &pauses{stop: func(n int) bool { return n >= 11 }}
	p.install(c)
	for i := range 2 {
		msgs := []*primitive.MessageExt{extWithID(strconv.Itoa(300+i), 0)}
		ctx, _ := concurrentCtx(msgs)
		if got, _ := c.consume(ctx, msgs...); got != rmq.ConsumeRetryLater {
			t.Errorf("delivery %d interrupted during the outage: %v, want RetryLater (never acknowledged)", i, got)
		}
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000, 10000, 10000, 10000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if got := p.all(); !slices.Equal(got, want) {
		t.Fatalf("pauses %v, want %v (the second delivery's first pause is the consumer-wide 10s)", got, want)
	}
}
