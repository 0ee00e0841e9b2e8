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

// TestLiveFailSendBackLosesMessage documents a client bug rather than a
// broker feature: rocketmq-client-go v2.1.2 ignores the response code of
// CONSUMER_SEND_MSG_BACK (upstream issue 1106), so when the broker refuses
// a send-back the client still acks the message and it is never
// redelivered.
func TestLiveFailSendBackLosesMessage(t *testing.T) {
	b := NewTest(t, testConfig(Config{TimeScale: 0.01, Topics: []string{"failsb"}}))
	p := newProducer(t, b, "pg-failsb")
	b.FailSendBack(1)
	r := newReceived()
	newPushConsumer(t, b, consumerOpts{group: "cg-failsb", topic: "failsb"}, collect(r, consumer.ConsumeRetryLater))
	sendSync(t, p, primitive.NewMessage("failsb", []byte("lost")))
	r.next(t, 5*time.Second)
	r.none(t, time.Second) // level 3 at scale 0.01 would redeliver after 100 ms
	if s := b.Stats(); s.SendBacksFailed != 1 || s.SendBacks != 0 || len(b.RetryMessages("cg-failsb")) != 0 {
		t.Fatalf("stats %+v", s)
	}
	eventually(t, 8*time.Second, "the lost message's offset to be committed", func() bool {
		var sum int64
		for q := range 4 {
			sum += max(b.ConsumerOffset("cg-failsb", "failsb", q), 0)
		}
		return sum == 1
	})
}

// TestLiveDropSendBackReconsumesLocally shows the client's transport-error
// path: the send-back gets no reply, the client times out (3 s), waits 5 s
// and consumes the message again locally with ReconsumeTimes+1.
func TestLiveDropSendBackReconsumesLocally(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~8 s: the client's fixed 3 s timeout plus 5 s pause")
	}
	b := NewTest(t, testConfig(Config{TimeScale: 0.01, Topics: []string{"dropsb"}}))
	p := newProducer(t, b, "pg-dropsb")
	b.DropSendBack(1)
	// The client re-consumes the same *MessageExt, so record the
	// ReconsumeTimes each delivery saw.
	seen := make(chan int32, 8)
	var calls atomic.Int32
	newPushConsumer(t, b, consumerOpts{group: "cg-dropsb", topic: "dropsb"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			seen <- msgs[0].ReconsumeTimes
			if calls.Add(1) == 1 {
				return consumer.ConsumeRetryLater, nil
			}
			return consumer.ConsumeSuccess, nil
		})
	sendSync(t, p, primitive.NewMessage("dropsb", []byte("again")))
	for want := int32(0); want <= 1; want++ {
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("delivery ReconsumeTimes %d, want %d", got, want)
			}
		case <-time.After(12 * time.Second):
			t.Fatalf("delivery %d missing", want)
		}
	}
	if s := b.Stats(); s.SendBacksFailed != 1 || len(b.RetryMessages("cg-dropsb")) != 0 {
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
