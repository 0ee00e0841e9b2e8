//go:build rocketmq

package rmqtest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

func TestLiveOffsetsSurviveConsumerRestart(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"restart"}}))
	p := newProducer(t, b, "pg-restart")
	for i := range 3 {
		sendSync(t, p, primitive.NewMessage("restart", []byte("old-"+strconv.Itoa(i))))
	}
	r1 := newReceived()
	c1 := newPushConsumer(t, b, consumerOpts{group: "cg-restart", topic: "restart"}, collect(r1, consumer.ConsumeSuccess))
	for range 3 {
		r1.next(t, 5*time.Second)
	}
	if err := c1.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// Shutdown persists offsets one-way; wait for the broker to have them.
	eventually(t, 15*time.Second, "committed offsets to reach 3", func() bool {
		var sum int64
		for q := range 4 {
			sum += max(b.ConsumerOffset("cg-restart", "restart", q), 0)
		}
		return sum == 3
	})

	for i := range 2 {
		sendSync(t, p, primitive.NewMessage("restart", []byte("new-"+strconv.Itoa(i))))
	}
	r2 := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-restart", topic: "restart"}, collect(r2, consumer.ConsumeSuccess))
	got := map[string]bool{}
	for range 2 {
		got[string(r2.next(t, 5*time.Second).Body)] = true
	}
	if !got["new-0"] || !got["new-1"] {
		t.Fatalf("restarted consumer got %v, want new-0 and new-1", got)
	}
	r2.none(t, 500*time.Millisecond)
}

func TestLiveRetryThenSuccess(t *testing.T) {
	b := NewTest(t, testConfig(Config{TimeScale: 0.01, Topics: []string{"retry"}}))
	p := newProducer(t, b, "pg-retry")
	sent := sendSync(t, p, primitive.NewMessage("retry", []byte("payload")))

	r := newReceived()
	var calls atomic.Int32
	newPushConsumer(t, b, consumerOpts{group: "cg-retry", topic: "retry"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			for _, m := range msgs {
				r.add(m)
			}
			if calls.Add(1) <= 2 {
				return consumer.ConsumeRetryLater, nil
			}
			return consumer.ConsumeSuccess, nil
		})
	for want := int32(0); want <= 2; want++ {
		m := r.next(t, 5*time.Second)
		if m.ReconsumeTimes != want {
			t.Fatalf("delivery %d: ReconsumeTimes %d", want, m.ReconsumeTimes)
		}
		if m.Topic != "retry" || string(m.Body) != "payload" || m.MsgId != sent.MsgID {
			t.Fatalf("delivery %d: topic %s body %q msgId %s (sent %s)", want, m.Topic, m.Body, m.MsgId, sent.MsgID)
		}
		if want > 0 {
			if m.GetProperty("RETRY_TOPIC") != "retry" || m.GetProperty("ORIGIN_MESSAGE_ID") != sent.OffsetMsgID {
				t.Fatalf("retry copy properties: %v", m.GetProperties())
			}
			if m.OffsetMsgId == sent.OffsetMsgID {
				t.Fatal("retry copy has the original's offset message id")
			}
		}
	}
	r.none(t, 300*time.Millisecond)
	copies := b.RetryMessages("cg-retry")
	if len(copies) != 2 || copies[0].ReconsumeTimes != 1 || copies[1].ReconsumeTimes != 2 ||
		copies[0].Topic != "%RETRY%cg-retry" {
		t.Fatalf("retry topic holds %d copies: %v", len(copies), copies)
	}
	if s := b.Stats(); s.SendBacks != 2 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestLiveDeadLetterAfterMaxReconsume(t *testing.T) {
	b := NewTest(t, testConfig(Config{TimeScale: 0.01, Topics: []string{"dlq"}}))
	p := newProducer(t, b, "pg-dlq")
	msg := primitive.NewMessage("dlq", []byte("poison"))
	msg.WithTag("t1")
	sent := sendSync(t, p, msg)

	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-dlq", topic: "dlq",
		opts: []consumer.Option{consumer.WithMaxReconsumeTimes(2)}}, collect(r, consumer.ConsumeRetryLater))
	for want := int32(0); want <= 2; want++ {
		if m := r.next(t, 5*time.Second); m.ReconsumeTimes != want {
			t.Fatalf("delivery ReconsumeTimes %d, want %d", m.ReconsumeTimes, want)
		}
	}
	eventually(t, 15*time.Second, "a dead letter", func() bool { return len(b.DLQ("cg-dlq")) == 1 })
	r.none(t, 500*time.Millisecond)
	dl := b.DLQ("cg-dlq")[0]
	if string(dl.Body) != "poison" || dl.MsgId != sent.MsgID || dl.GetTags() != "t1" ||
		dl.GetProperty("RETRY_TOPIC") != "dlq" || dl.ReconsumeTimes != 3 {
		t.Fatalf("dead letter %v props %v", dl, dl.GetProperties())
	}
	if s := b.Stats(); s.DeadLettered != 1 || s.SendBacks != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestLiveDelayedSend(t *testing.T) {
	b := NewTest(t, testConfig(Config{TimeScale: 0.1, Topics: []string{"delayed"}}))
	p := newProducer(t, b, "pg-delay")
	msg := primitive.NewMessage("delayed", []byte("later"))
	msg.WithDelayTimeLevel(2) // 5 s scaled to 500 ms
	sendSync(t, p, msg)
	if n := len(b.Messages("delayed")); n != 0 {
		t.Fatalf("delayed message visible at once (%d)", n)
	}
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-delay", topic: "delayed"}, collect(r, consumer.ConsumeSuccess))
	if m := r.next(t, 5*time.Second); string(m.Body) != "later" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestLiveBatchSend(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"batch"}}))
	p := newProducer(t, b, "pg-batch")
	var msgs []*primitive.Message
	for i := range 3 {
		msgs = append(msgs, primitive.NewMessage("batch", []byte("b"+strconv.Itoa(i))))
	}
	res, err := p.SendSync(context.Background(), msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != primitive.SendOK {
		t.Fatalf("status %v", res.Status)
	}
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-batch", topic: "batch"}, collect(r, consumer.ConsumeSuccess))
	got := map[string]bool{}
	for range 3 {
		got[string(r.next(t, 5*time.Second).Body)] = true
	}
	if !got["b0"] || !got["b1"] || !got["b2"] {
		t.Fatalf("got %v", got)
	}
	// One batch lands in one queue, in order.
	stored := b.Messages("batch")
	for i, m := range stored {
		if string(m.Body) != "b"+strconv.Itoa(i) || m.Queue.QueueId != stored[0].Queue.QueueId || m.QueueOffset != int64(i) {
			t.Fatalf("stored %d: %q queue %d offset %d", i, m.Body, m.Queue.QueueId, m.QueueOffset)
		}
	}
	if s := b.Stats(); s.Sends != 3 {
		t.Fatalf("sends %d", s.Sends)
	}
}

func TestLiveTagFilter(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"tags"}}))
	p := newProducer(t, b, "pg-tags")
	for _, tag := range []string{"a", "b", "c", "a"} {
		m := primitive.NewMessage("tags", []byte(tag))
		m.WithTag(tag)
		sendSync(t, p, m)
	}
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-tags", topic: "tags", tags: "a || c"}, collect(r, consumer.ConsumeSuccess))
	got := map[string]int{}
	for range 3 {
		got[string(r.next(t, 5*time.Second).Body)]++
	}
	r.none(t, 300*time.Millisecond)
	if got["a"] != 2 || got["c"] != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestLiveOrderly(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"order"}}))
	p := newProducer(t, b, "pg-order", producer.WithQueueSelector(producer.NewHashQueueSelector()))
	const n = 10
	for i := range n {
		m := primitive.NewMessage("order", []byte(strconv.Itoa(i)))
		m.WithShardingKey("order-1")
		sendSync(t, p, m)
	}
	r := newReceived()
	var failedOnce atomic.Bool
	newPushConsumer(t, b, consumerOpts{group: "cg-order", topic: "order", orderly: true},
		func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			for _, m := range msgs {
				r.add(m)
			}
			// Fail message 3 once: orderly consumption redelivers it in
			// place before anything after it.
			if string(msgs[0].Body) == "3" && failedOnce.CompareAndSwap(false, true) {
				if oc, ok := primitive.GetOrderlyCtx(ctx); ok {
					oc.SuspendCurrentQueueTimeMillis = 10
				}
				return consumer.SuspendCurrentQueueAMoment, nil
			}
			return consumer.ConsumeSuccess, nil
		})
	var order []string
	for range n + 1 {
		order = append(order, string(r.next(t, 5*time.Second).Body))
	}
	want := []string{"0", "1", "2", "3", "3", "4", "5", "6", "7", "8", "9"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	queue := -1
	for q := range 4 {
		if len(b.Messages("order")) > 0 && b.Messages("order")[0].Queue.QueueId == q {
			queue = q
		}
	}
	if owner, ok := b.QueueLockOwner("cg-order", "order", queue); !ok || owner == "" {
		t.Fatalf("queue %d not locked by the orderly consumer", queue)
	}
}

type txListener struct {
	mu      sync.Mutex
	exec    primitive.LocalTransactionState
	check   primitive.LocalTransactionState
	checked []string
}

func (l *txListener) ExecuteLocalTransaction(*primitive.Message) primitive.LocalTransactionState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exec
}

func (l *txListener) CheckLocalTransaction(m *primitive.MessageExt) primitive.LocalTransactionState {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checked = append(l.checked, string(m.Body)+"@"+m.Topic)
	return l.check
}

func (l *txListener) checks() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.checked...)
}

func newTxProducer(t *testing.T, b *Broker, group string, l *txListener) interface {
	SendMessageInTransaction(context.Context, *primitive.Message) (*primitive.TransactionSendResult, error)
} {
	t.Helper()
	p, err := producer.NewTransactionProducer(l,
		producer.WithNameServer(primitive.NamesrvAddr{b.Addr()}),
		producer.WithGroupName(group),
		producer.WithInstanceName(instance("tx")),
		producer.WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

func TestLiveTransactionCommitAndRollback(t *testing.T) {
	b := NewTest(t, testConfig(Config{TransactionCheckInterval: time.Hour, Topics: []string{"tx"}}))
	commit := newTxProducer(t, b, "pg-tx-commit", &txListener{exec: primitive.CommitMessageState})
	rollback := newTxProducer(t, b, "pg-tx-rollback", &txListener{exec: primitive.RollbackMessageState})
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-tx", topic: "tx"}, collect(r, consumer.ConsumeSuccess))

	res, err := rollback.SendMessageInTransaction(context.Background(), primitive.NewMessage("tx", []byte("rolled-back")))
	if err != nil || res.State != primitive.RollbackMessageState {
		t.Fatalf("rollback send: %v %v", res, err)
	}
	res, err = commit.SendMessageInTransaction(context.Background(), primitive.NewMessage("tx", []byte("committed")))
	if err != nil || res.State != primitive.CommitMessageState {
		t.Fatalf("commit send: %v %v", res, err)
	}
	m := r.next(t, 5*time.Second)
	if string(m.Body) != "committed" || m.GetProperty("TRAN_MSG") != "" {
		t.Fatalf("got %q props %v", m.Body, m.GetProperties())
	}
	r.none(t, 300*time.Millisecond)
	eventually(t, 2*time.Second, "both transactions settled", func() bool {
		s := b.Stats()
		return s.Commits == 1 && s.Rollbacks == 1 && len(b.HalfMessages()) == 0
	})
}

func TestLiveTransactionCheckBack(t *testing.T) {
	b := NewTest(t, testConfig(Config{TransactionCheckInterval: 200 * time.Millisecond, Topics: []string{"txcheck"}}))
	l := &txListener{exec: primitive.UnkonwnState, check: primitive.CommitMessageState}
	p := newTxProducer(t, b, "pg-tx-check", l)
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-tx-check", topic: "txcheck"}, collect(r, consumer.ConsumeSuccess))

	res, err := p.SendMessageInTransaction(context.Background(), primitive.NewMessage("txcheck", []byte("unknown-then-commit")))
	if err != nil || res.State != primitive.UnkonwnState {
		t.Fatalf("send: %v %v", res, err)
	}
	if h := b.HalfMessages(); len(h) != 1 || h[0].Topic != "txcheck" || string(h[0].Body) != "unknown-then-commit" {
		t.Fatalf("half messages %v", h)
	}
	m := r.next(t, 5*time.Second)
	if string(m.Body) != "unknown-then-commit" {
		t.Fatalf("got %q", m.Body)
	}
	if c := l.checks(); len(c) != 1 || c[0] != "unknown-then-commit@txcheck" {
		t.Fatalf("checks %v", c)
	}
	if len(b.HalfMessages()) != 0 || b.Stats().TransactionChecks != 1 {
		t.Fatalf("after check: halves %d stats %+v", len(b.HalfMessages()), b.Stats())
	}
}

func TestLiveTransactionCheckLimit(t *testing.T) {
	b := NewTest(t, testConfig(Config{TransactionCheckInterval: 50 * time.Millisecond, MaxTransactionChecks: 3, Topics: []string{"txlimit"}}))
	l := &txListener{exec: primitive.UnkonwnState, check: primitive.UnkonwnState}
	p := newTxProducer(t, b, "pg-tx-limit", l)
	if _, err := p.SendMessageInTransaction(context.Background(), primitive.NewMessage("txlimit", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the half message to be discarded", func() bool { return b.Stats().HalfDiscarded == 1 })
	if n := len(l.checks()); n != 3 {
		t.Fatalf("%d checks, want 3", n)
	}
	if len(b.Messages("txlimit")) != 0 {
		t.Fatal("discarded half message became visible")
	}
}

func TestLiveRebalanceTwoConsumers(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"rebalance"}}))
	p := newProducer(t, b, "pg-rebalance")
	ra, rb := newReceived(), newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-rebalance", topic: "rebalance"}, collect(ra, consumer.ConsumeSuccess))
	sendSync(t, p, primitive.NewMessage("rebalance", []byte("warm-up")))
	ra.next(t, 5*time.Second)

	start := time.Now()
	cb := newPushConsumer(t, b, consumerOpts{group: "cg-rebalance", topic: "rebalance"}, collect(rb, consumer.ConsumeSuccess))
	if ids := b.ConsumerIDs("cg-rebalance"); len(ids) != 2 {
		t.Fatalf("group members %v", ids)
	}
	// Send round robin until the new consumer gets its share.
	deadline := time.Now().Add(5 * time.Second)
	for got := false; !got; {
		sendSync(t, p, primitive.NewMessage("rebalance", []byte("m")))
		select {
		case <-rb.ch:
			got = true
		case <-time.After(20 * time.Millisecond):
		}
		if !got && time.Now().After(deadline) {
			t.Fatal("second consumer got nothing within 5 s")
		}
	}
	t.Logf("second consumer received its first message %v after it started", time.Since(start))

	// Once rebalanced, the first consumer no longer gets the second's
	// queues: a round of one message per queue splits between them.
	drain := func(r *received) {
		for {
			select {
			case <-r.ch:
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	drain(ra)
	drain(rb)
	queuesOf := func(r *received, n int) map[int]bool {
		qs := map[int]bool{}
		for range n {
			select {
			case m := <-r.ch:
				qs[m.Queue.QueueId] = true
			case <-time.After(time.Second):
				return qs
			}
		}
		return qs
	}
	for range 4 {
		sendSync(t, p, primitive.NewMessage("rebalance", []byte("split")))
	}
	qa, qb := queuesOf(ra, 2), queuesOf(rb, 2)
	if len(qa) != 2 || len(qb) != 2 {
		t.Fatalf("queues split %v / %v, want 2 each", qa, qb)
	}
	for q := range qa {
		if qb[q] {
			t.Fatalf("queue %d consumed by both", q)
		}
	}

	// When the second leaves, the first takes all queues back.
	start = time.Now()
	if err := cb.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the group to shrink", func() bool { return len(b.ConsumerIDs("cg-rebalance")) == 1 })
	seen := map[int]bool{}
	deadline = time.Now().Add(5 * time.Second)
	for len(seen) < 4 {
		sendSync(t, p, primitive.NewMessage("rebalance", []byte("back")))
		select {
		case m := <-ra.ch:
			seen[m.Queue.QueueId] = true
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("first consumer reached only queues %v within 5 s", seen)
		}
	}
	t.Logf("first consumer consumed all 4 queues %v after the second shut down", time.Since(start))
}
