package main

import (
	"bufio"
	"encoding/gob"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"
	"time"
)

// client is a test consumer connection to a Broker.
type client struct {
	t *testing.T
	c net.Conn
	s *session
}

func dialBroker(t *testing.T, b *Broker) *client {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := bufio.NewWriter(c)
	return &client{t: t, c: c, s: &session{enc: gob.NewEncoder(w), dec: gob.NewDecoder(bufio.NewReader(c)), w: w}}
}

func (c *client) call(req wireReq) wireResp {
	c.t.Helper()
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := c.s.call(req)
	if err != nil {
		c.t.Fatalf("%s: %v", req.Op, err)
	}
	return resp
}

func (c *client) next() *Delivery {
	c.t.Helper()
	resp := c.call(wireReq{Op: "next"})
	if resp.D == nil {
		c.t.Fatalf("next: no delivery (stop=%v)", resp.Stop)
	}
	return resp.D
}

func newTestBroker(t *testing.T, msgs []PlannedMessage, inflight time.Duration) *Broker {
	t.Helper()
	now := time.Now()
	b, err := NewBroker(BrokerConfig{InflightTimeout: inflight, RedeliverDelay: time.Millisecond}, msgs,
		rand.New(rand.NewPCG(1, 2)), func(*PlannedMessage) time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestBrokerRedeliversUntilAcked(t *testing.T) {
	msgs := []PlannedMessage{{N: 1, ID: "1", Group: "g", Copies: 1, Expect: ExpectProcessed}}
	b := newTestBroker(t, msgs, time.Minute)
	c := dialBroker(t, b)

	d := c.next()
	if d.N != 1 || d.Attempt != 1 {
		t.Fatalf("first delivery = %+v", d)
	}
	c.call(wireReq{Op: "nack", Copy: d.Copy, Seq: d.Seq, DelayNS: int64(time.Millisecond)})
	d2 := c.next()
	if d2.Copy != d.Copy || d2.Attempt != 2 || d2.Seq != 2 {
		t.Fatalf("after a nack: %+v, want the same copy at attempt 2", d2)
	}
	// A late answer to the first delivery changes nothing.
	c.call(wireReq{Op: "nack", Copy: d.Copy, Seq: d.Seq})
	if b.Done() {
		t.Fatal("done before the ack")
	}
	c.call(wireReq{Op: "ack", Copy: d2.Copy, Seq: d2.Seq})
	if !b.Done() {
		t.Fatal("not done after the ack")
	}
	recs := b.Records(msgs)
	if recs[0].Copies != 1 || recs[0].Acked != 1 || recs[0].Deliveries != 2 {
		t.Fatalf("record = %+v", recs[0])
	}
}

func TestBrokerRedeliversWhatADeadConsumerHeld(t *testing.T) {
	msgs := []PlannedMessage{{N: 1, ID: "1", Group: "g", Copies: 1}}
	b := newTestBroker(t, msgs, time.Minute)
	dead := dialBroker(t, b)
	d := dead.next()
	dead.c.Close() // the consumer dies holding the delivery

	d2 := dialBroker(t, b).next()
	if d2.Copy != d.Copy || d2.Attempt != 1 || d2.Seq != 2 {
		t.Fatalf("after the consumer died: %+v, want the same copy, same attempt", d2)
	}
}

func TestBrokerInflightTimeoutRedelivers(t *testing.T) {
	msgs := []PlannedMessage{{N: 1, ID: "1", Group: "g", Copies: 1}}
	b := newTestBroker(t, msgs, 50*time.Millisecond)
	slow := dialBroker(t, b)
	d := slow.next() // and never answers

	d2 := dialBroker(t, b).next()
	if d2.Copy != d.Copy || d2.Attempt != 1 || d2.Seq != 2 {
		t.Fatalf("after the in-flight timeout: %+v, want the same copy at the same attempt", d2)
	}
	// The slow consumer's late ack still counts: the copy is done.
	slow.call(wireReq{Op: "ack", Copy: d.Copy, Seq: d.Seq})
	if !b.Done() {
		t.Fatal("a late ack was ignored")
	}
}

func TestBrokerHandsTogetherCopiesOutAtOneInstant(t *testing.T) {
	msgs := []PlannedMessage{{N: 1, ID: "1", Group: "g", Copies: 3, Together: true}}
	b := newTestBroker(t, msgs, time.Minute)
	var starts []int64
	seen := map[int]bool{}
	for i := 0; i < 3; i++ {
		cl := dialBroker(t, b)
		d := cl.call(wireReq{Op: "next", Worker: i}).D
		if seen[d.Copy] {
			t.Fatalf("copy %d handed out twice", d.Copy)
		}
		seen[d.Copy] = true
		starts = append(starts, d.StartAt)
	}
	if starts[0] != starts[1] || starts[1] != starts[2] {
		t.Fatalf("start instants %v, want one", starts)
	}
}

func TestBrokerGivesTogetherSiblingsToOtherWorkers(t *testing.T) {
	msgs := []PlannedMessage{
		{N: 1, ID: "1", Group: "g", Copies: 2, Together: true},
		{N: 2, ID: "2", Group: "g", Copies: 1},
	}
	b := newTestBroker(t, msgs, time.Minute)
	w0 := dialBroker(t, b)
	first := w0.call(wireReq{Op: "next", Worker: 0}).D
	if first.N != 1 {
		// Message 2 came first; take message 1's first copy now.
		first = w0.call(wireReq{Op: "next", Worker: 0}).D
	}
	if first.N != 1 {
		t.Fatalf("no copy of message 1: %+v", first)
	}
	// Worker 0 asks again at once: not the twin, which waits for another
	// worker for a moment.
	if d := w0.call(wireReq{Op: "next", Worker: 0}).D; d.N == 1 && time.Now().Before(time.Unix(0, first.StartAt).Add(-5*time.Millisecond)) {
		t.Fatalf("worker 0 got both copies of message 1 while others could have had one")
	}
}

func TestExternalAPIReportsZombieWritesAndReplays(t *testing.T) {
	a := newExternalAPI()
	a.Begin(1, "r1", 0, false)
	a.Begin(1, "r2", 0, false) // a successor took over while r1 was paused
	if replay, stale, _ := a.Effect(1, "id-1", "r2", 0, false, 0, 10); replay || stale {
		t.Fatalf("successor's write: replay=%v stale=%v", replay, stale)
	}
	if replay, stale, _ := a.Effect(1, "id-1", "r1", 0, false, 0, 10); !replay || !stale {
		t.Fatalf("zombie's write: replay=%v stale=%v, want both", replay, stale)
	}
	applied, zombie, balances, calls, replays := a.Snapshot()
	want := map[int]int{1: 1}
	if !reflect.DeepEqual(applied, want) || !reflect.DeepEqual(zombie, want) || balances[0] != 10 || calls != 2 || replays != 1 {
		t.Fatalf("snapshot: applied=%v zombie=%v balances=%v calls=%d replays=%d", applied, zombie, balances, calls, replays)
	}
	if !a.ShouldFail(2, 1) || a.ShouldFail(2, 1) {
		t.Fatal("ShouldFail(n, 1) must say yes once, then no")
	}
}

func TestExternalAPIRefusesStaleFencingTokens(t *testing.T) {
	a := newExternalAPI()
	if a.Begin(1, "r1", 5, true) {
		t.Fatal("first owner refused")
	}
	if a.Begin(1, "r2", 6, true) {
		t.Fatal("successor with a greater token refused")
	}
	// The paused first owner resumes and writes with its old token: refused,
	// and not a zombie write, since nothing happened.
	if _, stale, fenced := a.Effect(1, "id-1", "r1", 5, true, 0, 10); !fenced || stale {
		t.Fatalf("stale token: fenced=%v stale=%v, want fenced only", fenced, stale)
	}
	if _, _, fenced := a.Effect(1, "id-1", "r2", 6, true, 0, 10); fenced {
		t.Fatal("the owner's write was refused")
	}
	applied, zombie, _, _, _ := a.Snapshot()
	if applied[1] != 1 || zombie[1] != 0 || a.Fenced() != 1 {
		t.Fatalf("applied=%v zombie=%v fenced=%d", applied, zombie, a.Fenced())
	}
}

func TestPlanIsDeterministicAndCarriesBadInput(t *testing.T) {
	cfg := PlanConfig{Messages: 200, DupRate: 0.3, Accounts: 4, FailRate: 0.1, Poison: 0.05, Exhaust: 0.05, BadInput: true, BigBody: 1 << 10, Group: "g"}
	a := Plan(cfg, rand.New(rand.NewPCG(9, 9)))
	b := Plan(cfg, rand.New(rand.NewPCG(9, 9)))
	if !reflect.DeepEqual(a, b) {
		t.Fatal("one seed drew two plans")
	}
	classes := map[string]int{}
	for _, m := range a {
		classes[m.Class]++
		n, acct, amount, ok := ParseBody(m.Body())
		if !ok || n != m.N || acct != m.Account || amount != m.Amount {
			t.Fatalf("message %d: body header does not parse back", m.N)
		}
	}
	for _, c := range []string{ClassNormal, ClassTransient, ClassPoison, ClassExhaust, ClassBadKey, ClassBadID, ClassNoGroup, ClassBigBody} {
		if classes[c] == 0 {
			t.Errorf("no %s message in the plan: %v", c, classes)
		}
	}
}

func TestRedirect(t *testing.T) {
	cases := []struct{ dialect, dsn, want string }{
		{"postgres", "host=127.0.0.1 port=5432 user=postgres dbname=x sslmode=disable", "user=postgres dbname=x sslmode=disable host=127.0.0.1 port=4000"},
		{"postgres", "postgres://u:p@db:5432/x?sslmode=disable", "postgres://u:p@127.0.0.1:4000/x?sslmode=disable"},
		{"mysql", "u:p@tcp(127.0.0.1:3306)/x?parseTime=true&clientFoundRows=true", "u:p@tcp(127.0.0.1:4000)/x?clientFoundRows=true&parseTime=true"},
	}
	for _, c := range cases {
		got, err := redirect(c.dialect, c.dsn, "127.0.0.1:4000")
		if err != nil || got != c.want {
			t.Errorf("redirect(%s, %q) = %q, %v; want %q", c.dialect, c.dsn, got, err, c.want)
		}
	}
	if got := withParam("u@tcp(h:1)/x?a=1&clientFoundRows=false", "clientFoundRows", "true"); got != "u@tcp(h:1)/x?a=1&clientFoundRows=true" {
		t.Errorf("withParam = %q", got)
	}
}
