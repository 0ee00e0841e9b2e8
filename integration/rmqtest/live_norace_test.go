//go:build rocketmq_norace

// Live tests that cannot run under -race because of data races inside
// rocketmq-client-go (pinned v2.1.3-0.20251226070945-2173d070fd1b), not in
// idemq or rmqtest; scripts/test runs them with -tags rocketmq_norace and
// without -race:
//   - orderly consumers: processQueue.takeMessages reads the queue's tree
//     map while pullMessage writes it (consumer/process_queue.go);
//   - transaction producers answering check-backs: checkTransactionState
//     reads the client's close flag, which Shutdown writes unguarded
//     (internal/client.go, rmqClient.Shutdown vs InvokeOneWay);
//   - consumers joining and leaving one group: every membership change
//     makes the others rebalance (InvokeSync reads the same close flag)
//     while they may be shutting down.

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
	eventually(t, 2*time.Second, "both transactions settled", func() bool {
		s := b.Stats()
		return s.Commits == 1 && s.Rollbacks == 1 && len(b.HalfMessages()) == 0
	})
	// The rollback is settled: anything it could have delivered is stored
	// by now, and would come before the sentinels.
	quiet(t, b, r, "cg-tx", "tx")
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
