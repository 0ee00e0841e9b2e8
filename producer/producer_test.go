package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/rlog"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/msgid"
)

func TestMain(m *testing.M) {
	// The client's logs go through the slog bridge; tests keep them out
	// of the output unless asked for.
	if os.Getenv("ROCKETMQ_GO_LOG_LEVEL") == "" {
		SetClientLogger(quietLog)
	} else {
		SetClientLogger(slog.Default())
	}
	os.Exit(m.Run())
}

const testNode = 77

func newTestProducer(t testing.TB, b *rmqtest.Broker, cfg Config) *Producer {
	t.Helper()
	if cfg.NameServers == nil {
		cfg.NameServers = []string{b.Addr()}
	}
	if cfg.IDSource == nil {
		g, err := msgid.NewGenerator(msgid.FixedNode(testNode), msgid.GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.IDSource = g
	}
	if cfg.Retries == 0 {
		cfg.Retries = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

func findByID(msgs []*primitive.MessageExt, id string) []*primitive.MessageExt {
	var out []*primitive.MessageExt
	for _, m := range msgs {
		if m.GetProperty(idemq.PropertyMessageID) == id {
			out = append(out, m)
		}
	}
	return out
}

func keysOf(m *primitive.MessageExt) []string {
	return strings.Split(m.GetKeys(), primitive.PropertyKeySeparator)
}

func TestSendSyncConfirmAndStamp(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"orders"}})
	p := newTestProducer(t, b, Config{Group: "pg-sync"})
	msg := &idemq.Message{
		Topic:      "orders",
		Tags:       "created",
		Keys:       []string{"order-1"},
		Body:       []byte(`{"id":1}`),
		Properties: map[string]string{"tenant": "acme", "empty": ""},
	}
	res, err := p.SendSync(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if msg.ID == "" || res.MessageID != msg.ID {
		t.Fatalf("msg.ID %q, result %q", msg.ID, res.MessageID)
	}
	if _, node, _, err := msgid.Parse(msg.ID); err != nil || node != testNode {
		t.Errorf("ID %q: node %d, err %v; want a snowflake on node %d", msg.ID, node, err, testNode)
	}
	if res.OffsetMsgID == "" || res.MsgID == "" || res.Topic != "orders" || res.BrokerName != rmqtest.BrokerName {
		t.Errorf("incomplete result %+v", res)
	}
	stored := b.Messages("orders")
	if len(stored) != 1 {
		t.Fatalf("broker holds %d messages, want 1", len(stored))
	}
	m := stored[0]
	if got := m.GetProperty(idemq.PropertyMessageID); got != msg.ID {
		t.Errorf("property %s = %q, want %q", idemq.PropertyMessageID, got, msg.ID)
	}
	if keys := keysOf(m); len(keys) != 2 || keys[0] != "order-1" || keys[1] != msg.ID {
		t.Errorf("keys %q, want [order-1 %s]", keys, msg.ID)
	}
	if m.GetTags() != "created" || string(m.Body) != `{"id":1}` || m.GetProperty("tenant") != "acme" {
		t.Errorf("stored message lost fields: tags %q body %q tenant %q", m.GetTags(), m.Body, m.GetProperty("tenant"))
	}
	if m.Queue.QueueId != res.QueueID || m.QueueOffset != res.QueueOffset || m.OffsetMsgId != res.OffsetMsgID {
		t.Errorf("result %+v does not name the stored copy (queue %d offset %d id %s)", res, m.Queue.QueueId, m.QueueOffset, m.OffsetMsgId)
	}
	if msg.Properties[idemq.PropertyMessageID] != msg.ID {
		t.Error("Stamp did not record the ID in msg.Properties")
	}
}

// A re-send of the same idemq.Message (after a failure, say) carries the
// same ID; RocketMQ's own UNIQ_KEY differs.
func TestResendKeepsID(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"resend"}})
	p := newTestProducer(t, b, Config{Group: "pg-resend"})
	msg := &idemq.Message{Topic: "resend", Body: []byte("x")}

	b.RejectSends(1)
	if _, err := p.SendSync(context.Background(), msg); err == nil {
		t.Fatal("send with a rejecting broker succeeded")
	} else if idemq.IsPermanent(err) {
		t.Fatalf("SYSTEM_BUSY reported as permanent: %v", err)
	}
	first := msg.ID
	if first == "" {
		t.Fatal("failed send left no ID")
	}
	for i := 0; i < 2; i++ {
		if _, err := p.SendSync(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	if msg.ID != first {
		t.Fatalf("ID changed from %s to %s", first, msg.ID)
	}
	if n := strings.Count(strings.Join(msg.Keys, " "), first); n != 1 {
		t.Errorf("ID appears %d times in Keys %q", n, msg.Keys)
	}
	copies := findByID(b.Messages("resend"), first)
	if len(copies) != 2 {
		t.Fatalf("%d stored copies carry the ID, want 2", len(copies))
	}
	if copies[0].MsgId == copies[1].MsgId {
		t.Errorf("UNIQ_KEY %s repeated: expected the client to make a new one", copies[0].MsgId)
	}
	for _, c := range copies {
		if keys := keysOf(c); len(keys) != 1 || keys[0] != first {
			t.Errorf("stored keys %q, want [%s]", keys, first)
		}
	}
}

func TestStampRules(t *testing.T) {
	g, err := msgid.NewGenerator(msgid.FixedNode(1), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// An ID in the property (a redriven message) is adopted.
	m := &idemq.Message{Topic: "t", Properties: map[string]string{idemq.PropertyMessageID: "123"}}
	if err := stamp(g, m); err != nil || m.ID != "123" || len(m.Keys) != 1 || m.Keys[0] != "123" {
		t.Errorf("adopt: err %v, ID %q, keys %q", err, m.ID, m.Keys)
	}
	// A preset ID is kept and published.
	m = &idemq.Message{Topic: "t", ID: "42", Keys: []string{"42"}}
	if err := stamp(g, m); err != nil || m.ID != "42" || m.Properties[idemq.PropertyMessageID] != "42" || len(m.Keys) != 1 {
		t.Errorf("preset: err %v, %+v", err, m)
	}
	// A conflict is refused.
	m = &idemq.Message{Topic: "t", ID: "1", Properties: map[string]string{idemq.PropertyMessageID: "2"}}
	if err := stamp(g, m); !errors.Is(err, ErrInvalidMessage) || !idemq.IsPermanent(err) {
		t.Errorf("conflict: err %v", err)
	}
	for _, id := range []string{"a b", "x\x01y", strings.Repeat("9", idemq.MaxKeyLen+1)} {
		m = &idemq.Message{Topic: "t", ID: id}
		if err := stamp(g, m); err == nil {
			t.Errorf("ID %q accepted", id)
		}
	}
	// An ID source failure is reported, not papered over.
	m = &idemq.Message{Topic: "t"}
	if err := stamp(failingIDs{msgid.ErrNodeLeaseLost}, m); !errors.Is(err, msgid.ErrNodeLeaseLost) || m.ID != "" {
		t.Errorf("lost lease: err %v, ID %q", err, m.ID)
	}
}

func TestInvalidMessagesAreRefused(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"a", "b", "t"}})
	p := newTestProducer(t, b, Config{Group: "pg-invalid"})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		msg  *idemq.Message
		opts []SendOption
	}{
		{"nil", nil, nil},
		{"no topic", &idemq.Message{}, nil},
		{"bad topic", &idemq.Message{Topic: "a b"}, nil},
		{"empty property name", &idemq.Message{Topic: "t", Properties: map[string]string{"": "v"}}, nil},
		{"reserved property", &idemq.Message{Topic: "t", Properties: map[string]string{"DELAY": "3"}}, nil},
		{"separator in value", &idemq.Message{Topic: "t", Properties: map[string]string{"a": "x\x02y"}}, nil},
		{"space in key", &idemq.Message{Topic: "t", Keys: []string{"a b"}}, nil},
		{"separator in tags", &idemq.Message{Topic: "t", Tags: "a\x01"}, nil},
		{"delay 0", &idemq.Message{Topic: "t"}, []SendOption{WithDelayLevel(0)}},
		{"delay 19", &idemq.Message{Topic: "t"}, []SendOption{WithDelayLevel(19)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.SendSync(ctx, tc.msg, tc.opts...)
			if !errors.Is(err, ErrInvalidMessage) || !idemq.IsPermanent(err) {
				t.Fatalf("err = %v, want a permanent ErrInvalidMessage", err)
			}
		})
	}
	if _, err := p.SendOrdered(ctx, &idemq.Message{Topic: "t"}, ""); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("empty sharding key: %v", err)
	}
	if _, err := p.SendBatch(ctx, nil); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("empty batch: %v", err)
	}
	if _, err := p.SendBatch(ctx, []*idemq.Message{{Topic: "a"}, {Topic: "b"}}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("mixed topics: %v", err)
	}
	if got := b.Stats().Sends; got != 0 {
		t.Errorf("broker accepted %d sends of invalid messages", got)
	}
}

func TestConfigValidation(t *testing.T) {
	g, _ := msgid.NewGenerator(msgid.FixedNode(1), msgid.GeneratorConfig{})
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name servers", Config{IDSource: g}, "NameServers"},
		{"no IDSource", Config{NameServers: []string{"127.0.0.1:9876"}}, "IDSource"},
		{"no port", Config{IDSource: g, NameServers: []string{"127.0.0.1"}}, "name server"},
		{"bad port", Config{IDSource: g, NameServers: []string{"127.0.0.1:99999"}}, "bad port"},
		{"retries", Config{IDSource: g, NameServers: []string{"127.0.0.1:9876"}, Retries: -2}, "Retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// New touches no network: a name that does not resolve is found by
	// Start.
	p, err := New(Config{IDSource: g, NameServers: []string{"no-such-host.invalid:9876"}, Logger: quietLog})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := p.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "resolve") {
		t.Fatalf("Start with an unresolvable name server = %v, want a resolve error", err)
	}
}

// A Producer has the lifecycle of every long-lived idemq value: sends
// wait for Start, Start is idempotent, Shutdown is idempotent and works
// without Start, and nothing starts again after it.
func TestProducerLifecycle(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"life"}})
	g, _ := msgid.NewGenerator(msgid.FixedNode(testNode), msgid.GeneratorConfig{})
	ctx := context.Background()
	cfg := Config{NameServers: []string{b.Addr()}, Group: "pg-life", IDSource: g, Retries: -1, Logger: quietLog}

	unstarted, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown without Start: %v", err)
	}
	if err := unstarted.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Shutdown = %v, want ErrClosed", err)
	}

	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendSync(ctx, &idemq.Message{Topic: "life"}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("send before Start = %v, want ErrNotStarted", err)
	}
	for range 2 {
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.SendSync(ctx, &idemq.Message{Topic: "life", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Shutdown = %v, want ErrClosed", err)
	}
	if n := len(b.Messages("life")); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// Host names are resolved: the client itself rejects "localhost:port".
func TestNameServerHostNameResolved(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"resolved"}})
	_, port, _ := net.SplitHostPort(b.Addr())
	p := newTestProducer(t, b, Config{Group: "pg-resolve", NameServers: []string{"localhost:" + port}})
	if _, err := p.SendSync(context.Background(), &idemq.Message{Topic: "resolved", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if n := len(b.Messages("resolved")); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestSendReturnsBrokerID(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"plain"}})
	p := newTestProducer(t, b, Config{Group: "pg-send"})
	msg := &idemq.Message{Topic: "plain", ID: "555", Body: []byte("x")}
	brokerID, err := p.Send(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	stored := b.Messages("plain")
	if len(stored) != 1 || stored[0].OffsetMsgId != brokerID || brokerID == "" {
		t.Fatalf("Send returned %q; stored %d messages", brokerID, len(stored))
	}
	if stored[0].GetProperty(idemq.PropertyMessageID) != "555" {
		t.Error("preset ID not kept")
	}
}

// The message with the same sharding key always lands on the same queue,
// in send order.
func TestSendOrdered(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{QueuesPerTopic: 8, Topics: []string{"ordered"}})
	p := newTestProducer(t, b, Config{Group: "pg-ordered"})
	keys := []string{"order-1", "order-2", "order-3", "order-4", "order-5"}
	for i := 0; i < 10; i++ {
		for _, k := range keys {
			msg := &idemq.Message{Topic: "ordered", Body: []byte(fmt.Sprintf("%s/%d", k, i)), Properties: map[string]string{"k": k}}
			if _, err := p.SendOrdered(context.Background(), msg, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	queueOf := map[string]int{}
	lastSeq := map[string]int{}
	for _, m := range b.Messages("ordered") {
		k := m.GetProperty("k")
		if q, ok := queueOf[k]; ok && q != m.Queue.QueueId {
			t.Fatalf("key %s on queues %d and %d", k, q, m.Queue.QueueId)
		}
		queueOf[k] = m.Queue.QueueId
		var seq int
		fmt.Sscanf(strings.TrimPrefix(string(m.Body), k+"/"), "%d", &seq)
		if prev, ok := lastSeq[k]; ok && seq != prev+1 {
			t.Fatalf("key %s out of order: %d after %d", k, seq, prev)
		}
		lastSeq[k] = seq
	}
	if len(queueOf) != len(keys) {
		t.Fatalf("saw %d keys, want %d", len(queueOf), len(keys))
	}
	// The mapping is the selector's, so a second producer agrees.
	p2 := newTestProducer(t, b, Config{Group: "pg-ordered-2"})
	res, err := p2.SendOrdered(context.Background(), &idemq.Message{Topic: "ordered"}, "order-3")
	if err != nil {
		t.Fatal(err)
	}
	if res.QueueID != queueOf["order-3"] {
		t.Errorf("second producer put order-3 on queue %d, first on %d", res.QueueID, queueOf["order-3"])
	}
}

func TestSendBatch(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"batch"}})
	p := newTestProducer(t, b, Config{Group: "pg-batch"})
	msgs := []*idemq.Message{
		{Topic: "batch", Body: []byte("a"), Tags: "x"},
		{Topic: "batch", Body: []byte("b"), Properties: map[string]string{"p": "1"}},
		{Topic: "batch", Body: []byte("c"), ID: "999"},
	}
	res, err := p.SendBatch(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range msgs {
		if m.ID == "" {
			t.Fatal("batch message not stamped")
		}
		ids = append(ids, m.ID)
	}
	if res.MessageID != strings.Join(ids, ",") {
		t.Errorf("result IDs %q, want %q", res.MessageID, strings.Join(ids, ","))
	}
	stored := b.Messages("batch")
	if len(stored) != 3 {
		t.Fatalf("%d stored, want 3", len(stored))
	}
	for i, m := range stored {
		if m.GetProperty(idemq.PropertyMessageID) != ids[i] || string(m.Body) != string(msgs[i].Body) {
			t.Errorf("stored %d: id %q body %q", i, m.GetProperty(idemq.PropertyMessageID), m.Body)
		}
		if k := keysOf(m); k[len(k)-1] != ids[i] {
			t.Errorf("stored %d keys %q lack the ID", i, k)
		}
	}
	if stored[0].GetTags() != "x" || stored[1].GetProperty("p") != "1" {
		t.Error("batch lost tags or properties")
	}
}

func TestSendDelayed(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{TimeScale: 0.2, Topics: []string{"delayed"}})
	p := newTestProducer(t, b, Config{Group: "pg-delay"})
	msg := &idemq.Message{Topic: "delayed", Body: []byte("later")}
	if _, err := p.SendSync(context.Background(), msg, WithDelayLevel(3)); err != nil {
		t.Fatal(err)
	}
	// Level 3 is 10 s, scaled to 2 s: the message is held, then delivered.
	if n := len(b.Messages("delayed")); n != 0 {
		t.Fatalf("delayed message visible at once (%d)", n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(b.Messages("delayed")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("delayed message never became visible")
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := b.Messages("delayed")[0]
	if m.GetProperty(idemq.PropertyMessageID) != msg.ID {
		t.Errorf("delayed copy has ID %q, want %q", m.GetProperty(idemq.PropertyMessageID), msg.ID)
	}
}

func TestSendOneWay(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"oneway"}})
	p := newTestProducer(t, b, Config{Group: "pg-oneway"})
	msg := &idemq.Message{Topic: "oneway", Body: []byte("fire")}
	if err := p.SendOneWay(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(findByID(b.Messages("oneway"), msg.ID)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("one-way message never stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSendAsync(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"async"}})
	p := newTestProducer(t, b, Config{Group: "pg-async", AsyncConcurrency: 4})
	const n = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]SendResult{}
	msgs := make([]*idemq.Message, n)
	for i := range msgs {
		msgs[i] = &idemq.Message{Topic: "async", Body: []byte{byte(i)}}
		wg.Add(1)
		err := p.SendAsync(context.Background(), msgs[i], func(res SendResult, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			results[res.MessageID] = res
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		if msgs[i].ID == "" {
			t.Fatal("SendAsync returned before stamping")
		}
	}
	wg.Wait()
	if len(results) != n {
		t.Fatalf("%d callbacks with distinct IDs, want %d", len(results), n)
	}
	for _, m := range msgs {
		if len(findByID(b.Messages("async"), m.ID)) != 1 {
			t.Errorf("message %s not stored exactly once", m.ID)
		}
	}
	if err := p.SendAsync(context.Background(), &idemq.Message{Topic: "async"}, nil); err == nil {
		t.Error("nil callback accepted")
	}
}

// A broker that goes away makes the callback report an error; nothing
// panics (the client's own SendAsync would, issue 1102).
func TestSendAsyncDroppedBroker(t *testing.T) {
	b, err := rmqtest.New(rmqtest.Config{Topics: []string{"gone"}})
	if err != nil {
		t.Fatal(err)
	}
	p := newTestProducer(t, b, Config{Group: "pg-async-drop", SendTimeout: 5 * time.Second})
	// Warm up routes and the connection, then take the broker away.
	if _, err := p.SendSync(context.Background(), &idemq.Message{Topic: "gone"}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	done := make(chan error, 1)
	msg := &idemq.Message{Topic: "gone", Body: []byte("x")}
	if err := p.SendAsync(context.Background(), msg, func(_ SendResult, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("send to a closed broker reported success")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("callback never called")
	}
	// A panicking callback is contained too.
	ran := make(chan struct{})
	if err := p.SendAsync(context.Background(), &idemq.Message{Topic: "gone"}, func(SendResult, error) {
		close(ran)
		panic("callback bug")
	}); err != nil {
		t.Fatal(err)
	}
	<-ran
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownRefusesSends(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"t"}})
	p := newTestProducer(t, b, Config{Group: "pg-shutdown"})
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	msg := &idemq.Message{Topic: "t"}
	if _, err := p.SendSync(context.Background(), msg); !errors.Is(err, ErrClosed) {
		t.Errorf("SendSync after Shutdown: %v", err)
	}
	if err := p.SendAsync(context.Background(), msg, func(SendResult, error) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("SendAsync after Shutdown: %v", err)
	}
	if err := p.SendOneWay(context.Background(), msg); !errors.Is(err, ErrClosed) {
		t.Errorf("SendOneWay after Shutdown: %v", err)
	}
}

func BenchmarkSendSync(b *testing.B) {
	broker := rmqtest.NewTest(b, rmqtest.Config{Topics: []string{"bench"}})
	p := newTestProducer(b, broker, Config{Group: "pg-bench"})
	body := make([]byte, 256)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.SendSync(ctx, &idemq.Message{Topic: "bench", Body: body}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSendSyncParallel(b *testing.B) {
	broker := rmqtest.NewTest(b, rmqtest.Config{Topics: []string{"bench"}})
	p := newTestProducer(b, broker, Config{Group: "pg-bench-par"})
	body := make([]byte, 256)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.SendSync(ctx, &idemq.Message{Topic: "bench", Body: body}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestSendRoute proves the outbox relay's route: a sharding key lands on the
// same queue SendOrdered picks, and a delay level holds the message back.
func TestSendRoute(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{QueuesPerTopic: 8, TimeScale: 0.2, Topics: []string{"routed", "routed-later"}})
	p := newTestProducer(t, b, Config{Group: "pg-route"})
	ctx := context.Background()
	ordered, err := p.SendOrdered(ctx, &idemq.Message{Topic: "routed"}, "order-9")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := p.SendRoute(ctx, &idemq.Message{Topic: "routed", Body: []byte("x")}, "order-9", 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range b.Messages("routed") {
		if m.Queue.QueueId != ordered.QueueID {
			t.Fatalf("routed message on queue %d, SendOrdered chose %d", m.Queue.QueueId, ordered.QueueID)
		}
	}
	msg := &idemq.Message{Topic: "routed-later", Body: []byte("later")}
	if _, err := p.SendRoute(ctx, msg, "", 3); err != nil {
		t.Fatal(err)
	}
	if n := len(b.Messages("routed-later")); n != 0 {
		t.Fatalf("delayed message visible at once (%d)", n)
	}
	if _, err := p.SendRoute(ctx, &idemq.Message{Topic: "routed"}, "bad\x01key", 0); err == nil {
		t.Fatal("sharding key with a separator accepted")
	}
}

// TestHungAttemptIsRetried: a send attempt the broker never answers is
// abandoned after AttemptTimeout and the next attempt delivers the message,
// well inside SendTimeout. rocketmq-client-go applies WithSendMsgTimeout to
// each attempt, so handing it the total budget would let one hung attempt
// use all of it and leave nothing to retry.
func TestHungAttemptIsRetried(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"hung"}})
	p := newTestProducer(t, b, Config{
		Group:          "pg-hung",
		Retries:        2,
		SendTimeout:    6 * time.Second,
		AttemptTimeout: time.Second,
	})
	// Warm up the route and the connection, so the hung request is the send.
	if _, err := p.SendSync(context.Background(), &idemq.Message{Topic: "hung"}); err != nil {
		t.Fatal(err)
	}
	b.HangSends(1)
	msg := &idemq.Message{Topic: "hung", Body: []byte("once")}
	start := time.Now()
	res, err := p.SendSync(context.Background(), msg)
	if err != nil {
		t.Fatalf("send after one hung attempt: %v (after %s)", err, time.Since(start))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("send took %s: the hung attempt was not cut at AttemptTimeout", took)
	}
	if got := findByID(b.Messages("hung"), res.MessageID); len(got) != 1 {
		t.Fatalf("stored %d copies of %s, want 1", len(got), res.MessageID)
	}
}

func TestAttemptTimeoutDefaults(t *testing.T) {
	g, err := msgid.NewGenerator(msgid.FixedNode(testNode), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NameServers: []string{"127.0.0.1:1"}, IDSource: g}
	if err := cfg.defaults("producer"); err != nil {
		t.Fatal(err)
	}
	if cfg.AttemptTimeout != DefaultAttemptTimeout || cfg.SendTimeout != DefaultSendTimeout {
		t.Fatalf("defaults: attempt %s, total %s", cfg.AttemptTimeout, cfg.SendTimeout)
	}
	cfg = Config{NameServers: []string{"127.0.0.1:1"}, IDSource: g, SendTimeout: time.Second, AttemptTimeout: time.Minute}
	if err := cfg.defaults("producer"); err != nil {
		t.Fatal(err)
	}
	if cfg.AttemptTimeout != time.Second {
		t.Fatalf("AttemptTimeout above SendTimeout kept as %s", cfg.AttemptTimeout)
	}
	cfg = Config{NameServers: []string{"127.0.0.1:1"}, IDSource: g, AttemptTimeout: -1}
	if err := cfg.defaults("producer"); err == nil {
		t.Fatal("negative AttemptTimeout accepted")
	}
}

// The client says "route info not found" both for a name server that does
// not answer and for a topic nobody created; the producer says which.
func TestSendExplainsRouteErrors(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{})
	p := newTestProducer(t, b, Config{Group: "pg-explain", SendTimeout: 5 * time.Second})
	_, err := p.SendSync(context.Background(), &idemq.Message{Topic: "nobody-made-it"})
	if err == nil || !strings.Contains(err.Error(), `topic "nobody-made-it" does not exist`) {
		t.Fatalf("missing topic: %v", err)
	}
	if idemq.IsPermanent(err) {
		t.Fatalf("a missing topic may be created later; got a permanent error: %v", err)
	}

	// A name server that does not answer at Start is named at Start, not
	// left for the first send.
	addr := testenv.DeadAddr(t) // nothing listens there
	g, _ := msgid.NewGenerator(msgid.FixedNode(testNode), msgid.GeneratorConfig{})
	closed, err := New(Config{NameServers: []string{addr}, Group: "pg-explain-closed", IDSource: g, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	err = closed.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no name server answers") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Start against a closed port = %v, want \"no name server answers\" naming %s", err, addr)
	}

	// A name server that goes away after Start is named by the send.
	proxy := testenv.NewProxy(t, b.Addr())
	down := newTestProducer(t, b, Config{Group: "pg-explain-down", NameServers: []string{proxy.Addr()}, SendTimeout: 5 * time.Second})
	proxy.Cut()
	_, err = down.SendSync(context.Background(), &idemq.Message{Topic: "t"})
	if err == nil || !strings.Contains(err.Error(), "no name server answers") {
		t.Fatalf("unreachable name server: %v", err)
	}
}

// countHandler counts the records of the RocketMQ client at or above
// Info, slog's default level.
type countHandler struct{ n *atomic.Int64 }

func (h countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "component" && a.Value.String() == "rocketmq-client" {
			h.n.Add(1)
			return false
		}
		return true
	})
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// The client writes dozens of Info lines for a few messages; by default
// they are at Debug, and a handler at Info (slog's default) sees none.
// SetClientInfoLevel brings them back.
func TestClientLogsQuietByDefault(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"quiet"}})
	var n atomic.Int64
	SetClientLogger(slog.New(countHandler{&n}))
	t.Cleanup(func() { SetClientLogger(quietLog); SetClientInfoLevel(slog.LevelDebug) })
	rlog.SetLogLevel("info") // the client's own filter, as in production
	t.Cleanup(func() { rlog.SetLogLevel(os.Getenv("ROCKETMQ_GO_LOG_LEVEL")) })

	send3 := func(group string) {
		p := newTestProducer(t, b, Config{Group: group})
		for range 3 {
			if _, err := p.SendSync(context.Background(), &idemq.Message{Topic: "quiet", Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	send3("pg-quiet")
	if got := n.Load(); got != 0 {
		t.Fatalf("%d client lines at Info or above for 3 sends, want 0", got)
	}

	SetClientInfoLevel(slog.LevelInfo)
	send3("pg-loud")
	if got := n.Load(); got < 3 {
		t.Fatalf("%d client lines at Info after SetClientInfoLevel(Info), want several", got)
	}
	t.Logf("the client wrote %d Info lines for 3 sends", n.Load())
}
