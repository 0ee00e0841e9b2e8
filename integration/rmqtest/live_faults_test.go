//go:build rocketmq

package rmqtest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

func TestLiveRejectSends(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"reject"}}))
	p := newProducer(t, b, "pg-reject")
	sendSync(t, p, primitive.NewMessage("reject", []byte("warm-up")))
	b.RejectSends(1)
	if _, err := p.SendSync(context.Background(), primitive.NewMessage("reject", []byte("refused"))); err == nil {
		t.Fatal("SendSync succeeded against RejectSends")
	}
	sendSync(t, p, primitive.NewMessage("reject", []byte("accepted")))
	if n := len(b.Messages("reject")); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
}

func TestLiveOversizedSendFails(t *testing.T) {
	b := NewTest(t, testConfig(Config{MaxMessageSize: 1024, Topics: []string{"big"}}))
	// Compression would shrink the body below the limit.
	p := newProducer(t, b, "pg-big", producer.WithCompressMsgBodyOverHowmuch(1<<20))
	big := make([]byte, 2048)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if _, err := p.SendSync(context.Background(), primitive.NewMessage("big", big)); err == nil {
		t.Fatal("oversized send succeeded")
	}
	if b.Stats().SendsRefused != 1 {
		t.Fatalf("refused %d, want 1 (code 13 is not retried)", b.Stats().SendsRefused)
	}
}

func TestLivePauseAndResume(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"pause"}}))
	p := newProducer(t, b, "pg-pause")
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-pause", topic: "pause"}, collect(r, consumer.ConsumeSuccess))
	sendSync(t, p, primitive.NewMessage("pause", []byte("before")))
	r.next(t, 5*time.Second)

	b.Pause()
	if _, err := p.SendSync(context.Background(), primitive.NewMessage("pause", []byte("during"))); err == nil {
		t.Fatal("send succeeded while paused")
	}
	b.Resume()
	sendSync(t, p, primitive.NewMessage("pause", []byte("after")))
	if m := r.next(t, 5*time.Second); string(m.Body) != "after" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestLiveDropConnectionsConsumerRecovers(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"drop"}}))
	p := newProducer(t, b, "pg-drop")
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-drop", topic: "drop"}, collect(r, consumer.ConsumeSuccess))
	// One message per queue (the producer goes round robin): once all
	// arrived, every queue has a pull held at the broker. A request caught
	// in flight by the drop is lost and costs the client its timeout.
	for range 4 {
		sendSync(t, p, primitive.NewMessage("drop", []byte("one")))
	}
	for range 4 {
		r.next(t, 5*time.Second)
	}

	b.DropConnections()
	// The producer reconnects on its next request.
	eventually(t, 5*time.Second, "a send after the drop", func() bool {
		_, err := p.SendSync(context.Background(), primitive.NewMessage("drop", []byte("two")))
		return err == nil
	})
	// Held pulls were answered with an error: the consumer pulls again on a
	// new connection after the client's 3 s error pause.
	if m := r.next(t, 8*time.Second); string(m.Body) != "two" {
		t.Fatalf("got %q", m.Body)
	}
}

// TestLiveFailSendBackIsRedelivered: when the broker refuses a send-back,
// the pinned rocketmq-client-go sends the message into %RETRY%group itself
// (v2.1.2 acked it and lost it, upstream issue 1106), at delay level
// 3+ReconsumeTimes whatever delay the consumer asked for. No loss: the
// message comes back with ReconsumeTimes 1 and its offset is committed.
func TestLiveFailSendBackIsRedelivered(t *testing.T) {
	b := NewTest(t, testConfig(Config{TimeScale: 0.01, Topics: []string{"failsb"}}))
	p := newProducer(t, b, "pg-failsb")
	b.FailSendBack(1)
	r := newReceived()
	var calls atomic.Int32
	newPushConsumer(t, b, consumerOpts{group: "cg-failsb", topic: "failsb"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			r.add(msgs[0])
			if calls.Add(1) == 1 {
				return consumer.ConsumeRetryLater, nil
			}
			return consumer.ConsumeSuccess, nil
		})
	sent := sendSync(t, p, primitive.NewMessage("failsb", []byte("kept")))
	if m := r.next(t, 5*time.Second); m.ReconsumeTimes != 0 {
		t.Fatalf("first delivery ReconsumeTimes %d", m.ReconsumeTimes)
	}
	// Level 3 (10 s) at scale 0.01: back within 100 ms of the fallback send.
	m := r.next(t, 10*time.Second)
	if m.ReconsumeTimes != 1 || string(m.Body) != "kept" || m.MsgId != sent.MsgID || m.Topic != "failsb" {
		t.Fatalf("redelivery %+v", m)
	}
	// The retry copy came from a plain send (the client's fallback), not
	// from a send-back.
	if s := b.Stats(); s.SendBacksFailed != 1 || s.SendBacks != 0 || s.Sends != 2 || len(b.RetryMessages("cg-failsb")) != 1 {
		t.Fatalf("stats %+v, retry copies %d", s, len(b.RetryMessages("cg-failsb")))
	}
	eventually(t, 10*time.Second, "the offset to be committed", func() bool {
		var sum int64
		for q := range 4 {
			sum += max(b.ConsumerOffset("cg-failsb", "failsb", q), 0)
		}
		return sum == 1
	})
}

// TestLiveDropSendBackIsRedelivered: a send-back that gets no answer (the
// broker dropped the connection) times out after the client's fixed 3 s;
// the client then sends the message into %RETRY%group itself. The broker
// answered the connection's held long polls before dropping it, so the
// consumer pulls the retry queue again after its 3 s error pause, not
// after its 30 s pull timeout.
func TestLiveDropSendBackIsRedelivered(t *testing.T) {
	b := NewTest(t, testConfig(Config{TimeScale: 0.01, Topics: []string{"dropsb"}}))
	p := newProducer(t, b, "pg-dropsb")
	r := newReceived()
	var calls atomic.Int32
	newPushConsumer(t, b, consumerOpts{group: "cg-dropsb", topic: "dropsb"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			r.add(msgs[0])
			if calls.Add(1) == 1 {
				return consumer.ConsumeRetryLater, nil
			}
			return consumer.ConsumeSuccess, nil
		})
	// Every queue, the retry queue included, has a pull held on the
	// connection the drop will take away.
	eventually(t, 10*time.Second, "the first rebalance", func() bool {
		return b.PulledQueues("cg-dropsb", "dropsb") == 4 && b.PulledQueues("cg-dropsb", "%RETRY%cg-dropsb") == 1
	})
	b.DropSendBack(1)
	sendSync(t, p, primitive.NewMessage("dropsb", []byte("again")))
	if m := r.next(t, 5*time.Second); m.ReconsumeTimes != 0 {
		t.Fatalf("first delivery ReconsumeTimes %d", m.ReconsumeTimes)
	}
	start := time.Now()
	m := r.next(t, 20*time.Second)
	if m.ReconsumeTimes != 1 || string(m.Body) != "again" {
		t.Fatalf("redelivery %+v", m)
	}
	t.Logf("redelivered %v after the first delivery", time.Since(start))
	if s := b.Stats(); s.SendBacksFailed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestLiveDelayedReplyTimesOutButTakesEffect shows the ambiguity an
// outbox relay must absorb: the send timed out for the producer, yet the
// broker stored the message.
func TestLiveDelayedReplyTimesOutButTakesEffect(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"slow"}}))
	p := newProducer(t, b, "pg-slow", producer.WithRetry(0))
	sendSync(t, p, primitive.NewMessage("slow", []byte("warm-up")))
	b.DelayReplies(3500 * time.Millisecond) // the client's send timeout is 3 s
	if _, err := p.SendSync(context.Background(), primitive.NewMessage("slow", []byte("ambiguous"))); err == nil {
		t.Fatal("send did not time out")
	}
	b.DelayReplies(0)
	if got := b.Messages("slow"); len(got) != 2 || string(got[1].Body) != "ambiguous" {
		t.Fatalf("stored %d", len(got))
	}
}
