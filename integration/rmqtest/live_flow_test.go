//go:build rocketmq

package rmqtest

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
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
	quiet(t, b, r2, "cg-restart", "restart")
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
	copies := b.RetryMessages("cg-retry")
	if len(copies) != 2 || copies[0].ReconsumeTimes != 1 || copies[1].ReconsumeTimes != 2 ||
		copies[0].Topic != "%RETRY%cg-retry" {
		t.Fatalf("retry topic holds %d copies: %v", len(copies), copies)
	}
	if s := b.Stats(); s.SendBacks != 2 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v", s)
	}
	quiet(t, b, r, "cg-retry", "retry")
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
	dl := b.DLQ("cg-dlq")[0]
	if string(dl.Body) != "poison" || dl.MsgId != sent.MsgID || dl.GetTags() != "t1" ||
		dl.GetProperty("RETRY_TOPIC") != "dlq" || dl.ReconsumeTimes != 3 {
		t.Fatalf("dead letter %v props %v", dl, dl.GetProperties())
	}
	if s := b.Stats(); s.DeadLettered != 1 || s.SendBacks != 3 {
		t.Fatalf("stats %+v", s)
	}
	// The dead-lettered message is not delivered again. (The sentinels
	// fail too and are retried after the test.)
	quiet(t, b, r, "cg-dlq", "dlq")
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
	quietTagged(t, b, r, "cg-tags", "tags", "a")
	if got["a"] != 2 || got["c"] != 1 {
		t.Fatalf("got %v", got)
	}
}
