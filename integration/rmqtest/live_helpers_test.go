//go:build rocketmq || rocketmq_norace

// Tests in files with the rocketmq build tag run the real
// rocketmq-client-go against the broker, under -race:
//
//	go test -race -tags rocketmq -run 'TestLive|Example' ./integration/rmqtest/
//
// Those with the rocketmq_norace tag (live_norace_test.go) meet data races
// inside the client itself and run without -race:
//
//	go test -tags rocketmq_norace -run TestLive ./integration/rmqtest/

package rmqtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

func TestMain(m *testing.M) {
	rlog.SetLogLevel("error")
	os.Exit(m.Run())
}

// testConfig adds a debug logger to cfg when RMQTEST_DEBUG is set.
func testConfig(cfg Config) Config {
	if os.Getenv("RMQTEST_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

var instanceSeq atomic.Int64

// instance returns a process-unique client instance name.
func instance(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), instanceSeq.Add(1))
}

func newProducer(t *testing.T, b *Broker, group string, opts ...producer.Option) rocketmq.Producer {
	t.Helper()
	all := append([]producer.Option{
		producer.WithNameServer(primitive.NamesrvAddr{b.Addr()}),
		producer.WithGroupName(group),
		producer.WithInstanceName(instance("p")),
		producer.WithRetry(1),
	}, opts...)
	p, err := rocketmq.NewProducer(all...)
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatalf("start producer: %v", err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

func sendSync(t *testing.T, p rocketmq.Producer, msg *primitive.Message) *primitive.SendResult {
	t.Helper()
	res, err := p.SendSync(context.Background(), msg)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if res.Status != primitive.SendOK {
		t.Fatalf("send status %v", res.Status)
	}
	return res
}

// received collects deliveries.
type received struct {
	mu   sync.Mutex
	msgs []*primitive.MessageExt
	ch   chan *primitive.MessageExt
}

func newReceived() *received { return &received{ch: make(chan *primitive.MessageExt, 1024)} }

func (r *received) add(m *primitive.MessageExt) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	r.ch <- m
}

// next waits for a delivery.
func (r *received) next(t *testing.T, timeout time.Duration) *primitive.MessageExt {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no delivery within %v", timeout)
		return nil
	}
}

type consumerOpts struct {
	group   string
	topic   string
	tags    string
	orderly bool
	opts    []consumer.Option
}

func newPushConsumer(t *testing.T, b *Broker, co consumerOpts,
	f func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error)) rocketmq.PushConsumer {
	t.Helper()
	all := append([]consumer.Option{
		consumer.WithNameServer(primitive.NamesrvAddr{b.Addr()}),
		consumer.WithGroupName(co.group),
		consumer.WithInstance(instance("c")),
		consumer.WithConsumerModel(consumer.Clustering),
		consumer.WithConsumerOrder(co.orderly),
		// A new group on rmqtest, as on a real broker, starts at the last
		// offset unless told otherwise; these tests send first.
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	}, co.opts...)
	c, err := rocketmq.NewPushConsumer(all...)
	if err != nil {
		t.Fatalf("new consumer: %v", err)
	}
	sel := consumer.MessageSelector{Type: consumer.TAG, Expression: co.tags}
	if co.tags == "" {
		sel.Expression = "*"
	}
	if err := c.Subscribe(co.topic, sel, f); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatalf("start consumer: %v", err)
	}
	t.Logf("consumer %s Start took %v", co.group, time.Since(start))
	// Wait for the first rebalance (a pull on every queue, the retry queue
	// included) so that a test ending early does not shut the client down
	// in the middle of it: the client's Shutdown races with its own
	// requests in flight (an unguarded close flag).
	eventually(t, 10*time.Second, "the consumer's first rebalance", func() bool {
		return b.PulledQueues(co.group, co.topic) == b.store.queueCount(co.topic) &&
			b.PulledQueues(co.group, retryTopicPrefix+co.group) == 1
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = c.Shutdown() }) })
	return c
}

// collect returns a consume function that records every delivery and
// answers result.
func collect(r *received, result consumer.ConsumeResult) func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
	return func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		for _, m := range msgs {
			r.add(m)
		}
		return result, nil
	}
}

// quiet asserts that the group's consumer delivers nothing more of what
// was stored before: it appends a sentinel to every queue of topic (and of
// the group's retry topic) and waits for all of them. A queue is consumed
// in order, so anything the broker would still deliver from before comes
// first and fails the test; the sentinels' arrival proves the consumer
// pulled every queue past it.
func quiet(t *testing.T, b *Broker, r *received, group, topic string) {
	quietTagged(t, b, r, group, topic, "")
}

// quietTagged is quiet with sentinels carrying tag, for a consumer that
// filters by tag.
func quietTagged(t *testing.T, b *Broker, r *received, group, topic, tag string) {
	t.Helper()
	want := map[string]bool{}
	put := func(tp, realTopic string, q int) {
		body := fmt.Sprintf("sentinel %s/%d", tp, q)
		m := &storedMessage{Topic: tp, QueueID: int32(q), BornTimestamp: time.Now().UnixMilli(), Body: []byte(body),
			Props: map[string]string{propUniqKey: fmt.Sprintf("SENTINEL%d", instanceSeq.Add(1))}}
		if realTopic != "" {
			m.Props[propRetryTopic] = realTopic
		}
		if tag != "" {
			m.Props[propTags] = tag
		}
		s := b.store
		s.mu.Lock()
		s.appendLocked(m, time.Now())
		s.mu.Unlock()
		want[body] = true
	}
	for q := range b.store.queueCount(topic) {
		put(topic, "", q)
	}
	put(retryTopicPrefix+group, topic, 0)
	for len(want) > 0 {
		m := r.next(t, 10*time.Second)
		if !want[string(m.Body)] {
			t.Fatalf("delivered after the test expected quiet: topic=%s body=%q reconsume=%d", m.Topic, m.Body, m.ReconsumeTimes)
		}
		delete(want, string(m.Body))
	}
}
