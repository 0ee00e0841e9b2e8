package rmqtest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/idemq/idemq/internal/testenv"
)

func TestRejectSends(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"rej"}})
	w := dialWire(t, b)
	b.RejectSends(2)
	for i := range 3 {
		r := w.call(codeSendMessage, sendExt("pg", "rej", 0, ""), []byte("x"))
		want := respSystemBusy
		if i == 2 {
			want = respSuccess
		}
		if r.Code != want {
			t.Fatalf("send %d: code %d, want %d", i, r.Code, want)
		}
	}
	if n := len(b.Messages("rej")); n != 1 {
		t.Fatalf("%d stored", n)
	}
}

func TestPauseHoldsRequestsAndRefusesSends(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"p"}})
	w := dialWire(t, b)
	w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "p"}, nil)
	b.Pause()
	if r := w.call(codeSendMessage, sendExt("pg", "p", 0, ""), []byte("x")); r.Code != respServiceNotAvailable {
		t.Fatalf("send while paused: %d", r.Code)
	}
	_, held := w.start(codeUpdateConsumerOffset, map[string]string{"consumerGroup": "g", "topic": "p", "queueId": "0", "commitOffset": "5"}, nil)
	_, pull := w.start(codePullMessage, pullExt("g", "p", 0, 0, 0), nil)
	select {
	case r := <-held:
		t.Fatalf("answered while paused: %d", r.Code)
	case r := <-pull:
		t.Fatalf("pull answered while paused: %d", r.Code)
	case <-time.After(100 * time.Millisecond):
	}
	if got := b.ConsumerOffset("g", "p", 0); got != -1 {
		t.Fatalf("held request took effect while paused: offset %d", got)
	}
	b.Resume()
	if r := w.wait(held, 5*time.Second); r.Code != respSuccess {
		t.Fatalf("held request after resume: %d", r.Code)
	}
	if r := w.wait(pull, 5*time.Second); r.Code != respPullNotFound {
		t.Fatalf("held pull after resume: %d", r.Code)
	}
	if got := b.ConsumerOffset("g", "p", 0); got != 5 {
		t.Fatalf("offset after resume %d", got)
	}
	if n := len(b.Messages("p")); n != 0 {
		t.Fatalf("refused send stored %d", n)
	}
}

func TestDelayReplies(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"slow"}})
	w := dialWire(t, b)
	b.DelayReplies(200 * time.Millisecond)
	_, ch := w.start(codeSendMessage, sendExt("pg", "slow", 0, ""), []byte("x"))
	select {
	case <-ch:
		t.Fatal("reply not delayed")
	case <-time.After(50 * time.Millisecond):
	}
	// The request took effect before its reply.
	if n := len(b.Messages("slow")); n != 1 {
		t.Fatalf("%d stored before the reply", n)
	}
	if r := w.wait(ch, 5*time.Second); r.Code != respSuccess {
		t.Fatalf("delayed reply %d", r.Code)
	}
	b.DelayReplies(0)
	if r := w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "slow"}, nil); r.Code != respSuccess {
		t.Fatal("after DelayReplies(0)")
	}
}

func TestDropConnections(t *testing.T) {
	b := NewTest(t, Config{})
	a, c := dialWire(t, b), dialWire(t, b)
	a.call(codeHeartBeat, nil, heartbeatBody("A", []string{"g"}, nil))
	c.call(codeHeartBeat, nil, heartbeatBody("C", []string{"g"}, nil))
	b.DropConnections()
	a.expectClosed(5 * time.Second)
	c.expectClosed(5 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(b.ConsumerIDs("g")) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("members after drop %v", b.ConsumerIDs("g"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Reconnecting works and data survived.
	n := dialWire(t, b)
	if r := n.call(codeHeartBeat, nil, heartbeatBody("A", []string{"g"}, nil)); r.Code != respSuccess {
		t.Fatal("reconnect")
	}
}

func TestFailAndDropSendBack(t *testing.T) {
	b := NewTest(t, Config{TimeScale: 0.001, Topics: []string{"fsb"}})
	w := dialWire(t, b)
	w.call(codeSendMessage, sendExt("pg", "fsb", 0, ""), []byte("x"))
	m := pullOne(t, w, "fsb", 0, 0)

	b.FailSendBack(1)
	if r := w.call(codeConsumerSendMsgBack, sendBackExt("g", m, 1, 16), nil); r.Code != respSystemError {
		t.Fatalf("failed send-back: %d", r.Code)
	}
	// A dropped send-back answers the connection's held long poll before
	// the connection goes, so a consumer does not wait out its timeout.
	_, held := w.start(codePullMessage, pullExt("g", "fsb", 0, 1, time.Minute), nil)
	eventually(t, 5*time.Second, "the pull to be held", func() bool { return b.Stats().Pulls == 2 })
	b.DropSendBack(1)
	_, sb := w.start(codeConsumerSendMsgBack, sendBackExt("g", m, 1, 16), nil)
	if r := w.wait(held, 5*time.Second); r.Code != respServiceNotAvailable {
		t.Fatalf("held pull answered %d, want %d", r.Code, respServiceNotAvailable)
	}
	w.expectClosed(5 * time.Second)
	select {
	case r := <-sb:
		t.Fatalf("dropped send-back answered: %d", r.Code)
	default:
	}

	w2 := dialWire(t, b)
	if r := w2.call(codeConsumerSendMsgBack, sendBackExt("g", m, 1, 16), nil); r.Code != respSuccess {
		t.Fatalf("send-back after faults: %d", r.Code)
	}
	if s := b.Stats(); s.SendBacksFailed != 2 || s.SendBacks != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestFaultsConcurrently runs every fault switch from many goroutines
// while traffic flows; under -race it checks they are safe to call
// concurrently.
func TestFaultsConcurrently(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"cc"}})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				nc, err := net.Dial("tcp", b.Addr())
				if err != nil {
					continue
				}
				for _, cmd := range []*command{
					{Code: codeSendMessage, Opaque: 1, ExtFields: sendExt("pg", "cc", -1, ""), Body: []byte("x")},
					{Code: codeHeartBeat, Opaque: 2, Body: heartbeatBody("X", []string{"g"}, nil)},
					{Code: codePullMessage, Opaque: 3, ExtFields: pullExt("g", "cc", 0, 0, time.Second)},
				} {
					frame, _ := encodeCommand(cmd)
					_, _ = nc.Write(frame)
				}
				time.Sleep(time.Millisecond)
				_ = nc.Close()
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for i := range 50 {
				b.RejectSends(i % 3)
				b.FailSendBack(i % 2)
				b.DropSendBack(i % 2)
				b.DelayReplies(time.Duration(i%2) * time.Millisecond)
				if i%2 == 0 {
					b.Pause()
				} else {
					b.Resume()
				}
				if i%10 == 0 {
					b.DropConnections()
				}
				_ = b.Stats()
				_ = b.Topics()
				_ = b.Messages("cc")
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	b.Resume()
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}
