package consumer

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/middleware"
)

// verdict is the consumer's decision about one message.
type verdict int

const (
	ack   verdict = iota // acknowledge
	retry                // redeliver later
)

// outcome is the result of running one message through the chain.
type outcome struct {
	verdict verdict
	// delay is how long to wait before the redelivery (retry only).
	delay time.Duration
}

// consume is the callback the client calls with a batch of messages (one
// unless BatchSize is larger). The client takes only the returned result
// (it logs the error and ignores it: returning ConsumeSuccess with an
// error acknowledges), so consume always returns a nil error and says
// RetryLater or SuspendCurrentQueueAMoment explicitly.
//
// A delivery that failed for infrastructure (dedup.IsInfrastructure) is
// retried in place after a consumer-wide pause (see process), and a
// permanent failure that no DeadLetter middleware buried is retried, never
// acknowledged.
//
// Each message runs through the chain on its own. In concurrent mode every
// message of the batch runs, and if any fails the whole batch is retried
// with the longest delay asked for; in orderly mode the batch stops at the
// first failure, since later messages must not overtake it.
func (c *Consumer) consume(ctx context.Context, msgs ...*primitive.MessageExt) (result rmq.ConsumeResult, _ error) {
	if !c.enter() {
		return c.refuse(ctx, len(msgs)), nil
	}
	defer c.leave()
	// Belt and braces: a panic outside the chain (conversion, Config.Middleware, a
	// chain without Recover) must not kill the process (orderly mode) or
	// leave the batch unacknowledged until the consume timeout
	// (concurrent mode).
	defer func() {
		if v := recover(); v != nil {
			c.stats.panics.Add(1)
			c.log.Error("panic in the consumer callback; the batch will be redelivered",
				slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			result = c.failResult(ctx, c.cfg.SuspendInterval, middleware.RocketMQDelayLevel(c.cfg.RetryPolicy.Initial))
		}
	}()

	failed := false
	var longest time.Duration
	for _, ext := range msgs {
		o := c.process(ctx, ext)
		if o.verdict == ack {
			continue
		}
		failed = true
		longest = max(longest, o.delay)
		if c.cfg.Orderly {
			break
		}
	}
	if !failed {
		return rmq.ConsumeSuccess, nil
	}
	pause := min(max(longest, c.cfg.SuspendInterval), c.cfg.MaxSuspendInterval)
	return c.failResult(ctx, pause, middleware.RocketMQDelayLevel(longest)), nil
}

// failResult returns the result that asks the client to redeliver the
// batch: in orderly mode SuspendCurrentQueueAMoment with the queue's
// pause, otherwise RetryLater with the delay level.
func (c *Consumer) failResult(ctx context.Context, pause time.Duration, level int) rmq.ConsumeResult {
	if c.cfg.Orderly {
		if oc, ok := primitive.GetOrderlyCtx(ctx); ok {
			oc.SuspendCurrentQueueTimeMillis = int(pause.Milliseconds())
		}
		return rmq.SuspendCurrentQueueAMoment
	}
	if cc, ok := primitive.GetConcurrentlyCtx(ctx); ok {
		cc.DelayLevelWhenNextConsume = level
	}
	return rmq.ConsumeRetryLater
}

// process runs one message through the chain and classifies the result.
func (c *Consumer) process(ctx context.Context, ext *primitive.MessageExt) outcome {
	c.stats.delivered.Add(1)
	// The handler's context keeps the client's values (primitive.
	// GetConsumerCtx and friends) and is cancelled when Shutdown gives up
	// waiting.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.baseCtx, cancel)
	defer stop()

	c.noteWithoutID(ctx, ext)
	hctx, outcomeOf := middleware.TrackOutcome(hctx)
	msg, err := c.run(hctx, ext)
	// A store that could not decide (down, or a conflict it gave up on) is
	// not the message's fault: retry it here, after a consumer-wide pause,
	// rather than hand it back to the broker, which would count an attempt
	// (ReconsumeTimes) and, across a long outage, bury good messages. Every
	// callback of the consumer waits on the same growing pause, so an
	// outage pauses consumption; the first success resets it.
	for err != nil && dedup.IsInfrastructure(err) && c.baseCtx.Err() == nil && !c.isStopping() {
		c.stats.outageRetries.Add(1)
		pause := c.outage.fail()
		c.log.WarnContext(ctx, "the store could not decide; retrying in place without counting an attempt",
			append(msgAttrs(msg, ext), slog.Any("error", err), slog.Duration("pause", pause))...)
		if !c.outage.wait(hctx, pause, c.isStopping) {
			break
		}
		msg, err = c.run(hctx, ext)
	}
	if err == nil {
		c.outage.reset()
	}
	attempt := 1
	if msg != nil {
		attempt = msg.Attempt
	}
	var perr *middleware.PanicError
	if errors.As(err, &perr) {
		c.stats.panics.Add(1)
	}
	switch {
	case err != nil && c.baseCtx.Err() != nil:
		// Interrupted by Shutdown: never acknowledge, whatever the chain
		// said (the DeadLetter middleware buries nothing while its context
		// is done, so even a permanent error is retried).
		c.stats.retried.Add(1)
		return outcome{verdict: retry, delay: c.cfg.RetryPolicy.Next(attempt, err)}
	case err == nil:
		c.stats.succeeded.Add(1)
		switch outcomeOf(nil) {
		case middleware.OutcomeDuplicate:
			c.stats.duplicates.Add(1)
		case middleware.OutcomeDeadLetter:
			c.stats.deadLetters.Add(1)
		default:
			c.stats.processed.Add(1)
		}
		return outcome{verdict: ack}
	case idemq.IsPermanent(err) && !dedup.IsInfrastructure(err):
		// No dead-letter destination buried it (the DeadLetter middleware
		// acknowledges what it buries): acknowledging would drop the
		// message. Keep it: retry, and say so; the broker's %DLQ% takes
		// it after MaxAttempts.
		c.stats.unburied.Add(1)
		c.stats.retried.Add(1)
		d := c.cfg.RetryPolicy.Next(attempt, err)
		c.log.ErrorContext(ctx, "permanent failure reached the consumer with no DeadLetter middleware to bury it; "+
			"the message is kept and redelivered, and reaches the broker's %DLQ% after MaxAttempts",
			append(msgAttrs(msg, ext), slog.Any("error", err), slog.Duration("delay", d))...)
		return outcome{verdict: retry, delay: d}
	default:
		c.stats.retried.Add(1)
		d := c.cfg.RetryPolicy.Next(attempt, err)
		c.log.DebugContext(ctx, "message will be redelivered",
			append(msgAttrs(msg, ext), slog.Any("error", err), slog.Duration("delay", d))...)
		return outcome{verdict: retry, delay: d}
	}
}

// run converts ext and calls the chain. A panic anywhere
// in it becomes a *middleware.PanicError.
func (c *Consumer) run(ctx context.Context, ext *primitive.MessageExt) (msg *idemq.Message, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &middleware.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	msg = ToMessage(ext, c.cfg.Group)
	if msg == nil {
		return nil, idemq.Permanent(errors.New("consumer: nil message from the client"))
	}
	return msg, c.handler.Handle(ctx, msg)
}

// refuse answers a callback that arrived after Shutdown began, without
// running the handler. It waits until the client is shut down, so that the
// client drops the result (it ignores the result of a callback whose
// process queue was dropped): the messages are neither sent back to the
// retry topic, where they would count a broker-side attempt, nor
// acknowledged. Their offsets stay uncommitted and the broker delivers them
// again.
func (c *Consumer) refuse(ctx context.Context, n int) rmq.ConsumeResult {
	c.stats.refused.Add(int64(n))
	<-c.released
	return c.failResult(ctx, c.cfg.SuspendInterval, middleware.RocketMQDelayLevel(c.cfg.RetryPolicy.Initial))
}

func msgAttrs(msg *idemq.Message, ext *primitive.MessageExt) []any {
	if msg == nil {
		if ext == nil {
			return nil
		}
		return []any{slog.String("topic", ext.Topic), slog.String("msg_id", ext.MsgId)}
	}
	return []any{
		slog.String("message_id", msg.ID),
		slog.String("key", msg.DedupKey()),
		slog.String("topic", msg.Topic),
		slog.String("tags", msg.Tags),
		slog.Int("attempt", msg.Attempt),
		slog.Int("body_bytes", len(msg.Body)),
	}
}

// Bounds of the consumer-wide pause between in-place retries of deliveries
// that failed for infrastructure: it starts at outageMinPause, doubles with
// every such failure of any delivery, is capped at outageMaxPause, and is
// reset by any success.
const (
	outageMinPause = 100 * time.Millisecond
	outageMaxPause = 10 * time.Second
	// outagePoll is how often a pause checks whether Shutdown began.
	outagePoll = 100 * time.Millisecond
)

// outageBackoff is the consumer-wide pause of in-place retries. The zero
// value is ready to use.
type outageBackoff struct {
	mu   sync.Mutex
	next time.Duration
	// sleep replaces the real pause in tests; nil means waitPause.
	sleep func(ctx context.Context, d time.Duration, stopping func() bool) bool
}

// fail returns the pause before the next in-place retry and doubles the
// pause after it.
func (b *outageBackoff) fail() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := max(b.next, outageMinPause)
	b.next = min(2*d, outageMaxPause)
	return d
}

// reset starts the pause over, after a success.
func (b *outageBackoff) reset() {
	b.mu.Lock()
	b.next = 0
	b.mu.Unlock()
}

// wait pauses for d; it returns false, early, if ctx is done or stopping
// reports that Shutdown began.
func (b *outageBackoff) wait(ctx context.Context, d time.Duration, stopping func() bool) bool {
	b.mu.Lock()
	sleep := b.sleep
	b.mu.Unlock()
	if sleep != nil {
		return sleep(ctx, d, stopping)
	}
	return waitPause(ctx, d, stopping)
}

func waitPause(ctx context.Context, d time.Duration, stopping func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return !stopping()
		}
		t := time.NewTimer(min(left, outagePoll))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		if stopping() {
			return false
		}
	}
}

// noteWithoutID counts a message that lacks the idemq ID property and warns
// once per topic: its dedup key falls back to RocketMQ's MsgId, which a
// re-send changes, unless Config.Dedup.KeyFunc gives it a business key.
func (c *Consumer) noteWithoutID(ctx context.Context, ext *primitive.MessageExt) {
	if ext == nil || ext.GetProperty(idemq.PropertyMessageID) != "" {
		return
	}
	c.stats.withoutID.Add(1)
	if _, warned := c.warnedTopics.LoadOrStore(ext.Topic, true); warned {
		return
	}
	if c.cfg.Dedup.KeyFunc != nil {
		c.log.InfoContext(ctx, "messages without an idemq message ID on this topic; Dedup.KeyFunc gives them their key",
			slog.String("topic", ext.Topic), slog.String("msg_id", ext.MsgId))
		return
	}
	c.log.WarnContext(ctx, "message without an idemq message ID (sent by a producer that is not idemq's): "+
		"it is deduplicated on RocketMQ's MsgId, which a re-send of the message changes, so a re-sent copy runs the handler again; "+
		"set Config.Dedup.KeyFunc to a business key (logged once per topic, counted in Stats.WithoutID)",
		slog.String("topic", ext.Topic), slog.String("msg_id", ext.MsgId))
}
