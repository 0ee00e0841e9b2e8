//go:build rocketmq

package rmqtest

import (
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
)

func TestLiveSendAndConsume(t *testing.T) {
	b := NewTest(t, testConfig(Config{Topics: []string{"basic"}}))
	p := newProducer(t, b, "pg-basic")
	msg := primitive.NewMessage("basic", []byte("hello"))
	msg.WithTag("tagA")
	msg.WithKeys([]string{"key-1"})
	msg.WithProperty("idemq-id", "42")
	res := sendSync(t, p, msg)
	if len(res.OffsetMsgID) != 32 {
		t.Fatalf("offset msg id %q, want 32 hex chars", res.OffsetMsgID)
	}

	r := newReceived()
	start := time.Now()
	newPushConsumer(t, b, consumerOpts{group: "cg-basic", topic: "basic"}, collect(r, consumer.ConsumeSuccess))
	got := r.next(t, 5*time.Second)
	t.Logf("first delivery %v after consumer start", time.Since(start))
	if string(got.Body) != "hello" || got.GetTags() != "tagA" || got.GetKeys() != "key-1" ||
		got.GetProperty("idemq-id") != "42" || got.Topic != "basic" {
		t.Fatalf("got %v", got)
	}
	if got.MsgId != res.MsgID || got.OffsetMsgId != res.OffsetMsgID {
		t.Fatalf("ids: got %s/%s, sent %s/%s", got.MsgId, got.OffsetMsgId, res.MsgID, res.OffsetMsgID)
	}

	// A message sent while the consumer runs arrives through the long poll.
	start = time.Now()
	sendSync(t, p, primitive.NewMessage("basic", []byte("second")))
	if got := r.next(t, 5*time.Second); string(got.Body) != "second" {
		t.Fatalf("got %q", got.Body)
	}
	t.Logf("live delivery latency %v", time.Since(start))
}
