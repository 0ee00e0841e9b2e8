package outbox

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

func TestRolledBackTransactionSendsNothing(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		errBusiness := errors.New("business rule failed")
		msg := &idemq.Message{Topic: "orders", Body: []byte("x")}
		err := b.db.Transaction(func(tx *gorm.DB) error {
			if err := b.ob.Enqueue(tx, msg); err != nil {
				return err
			}
			return errBusiness
		})
		if !errors.Is(err, errBusiness) {
			t.Fatalf("transaction: %v", err)
		}
		s := &recSender{}
		n, err := newRelay(t, b.ob, s, RelayConfig{}).RunOnce(context.Background())
		if err != nil || n != 0 {
			t.Fatalf("RunOnce = %d, %v; want 0 rows", n, err)
		}
		if s.callCount() != 0 {
			t.Fatalf("sender called %d times for a rolled-back message", s.callCount())
		}
		if _, err := b.ob.Get(context.Background(), msg.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after rollback: %v, want ErrNotFound", err)
		}
	})
}

func TestCommittedMessageIsSentWhole(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		msg := &idemq.Message{
			Topic:      "orders",
			Tags:       "created",
			Keys:       []string{"order:1", "user:7"},
			Body:       []byte{0, 1, 2, 255, 'x'},
			Properties: map[string]string{"a": "b", PropertyShardingKey: "order:1", PropertyDelayLevel: "3"},
		}
		ids := b.enqueue(t, msg)
		if ids[0] == "" || msg.ID != ids[0] || msg.Properties[idemq.PropertyMessageID] != ids[0] {
			t.Fatalf("Enqueue did not stamp the ID on the message: ID %q, property %q", msg.ID, msg.Properties[idemq.PropertyMessageID])
		}
		e := b.get(t, msg.ID)
		if e.Status != StatusPending || e.ShardingKey != "order:1" || e.DelayLevel != 3 || e.BodySize != 5 {
			t.Fatalf("pending entry = %+v", e)
		}
		s := &recSender{}
		r := newRelay(t, b.ob, s, RelayConfig{})
		if n, err := r.RunOnce(context.Background()); err != nil || n != 1 {
			t.Fatalf("RunOnce = %d, %v; want 1", n, err)
		}
		if len(s.calls) != 1 {
			t.Fatalf("sender calls = %d, want 1", len(s.calls))
		}
		got := s.calls[0].msg
		if got.ID != msg.ID || got.Topic != "orders" || got.Tags != "created" || !reflect.DeepEqual(got.Keys, msg.Keys) ||
			!reflect.DeepEqual(got.Body, msg.Body) || !reflect.DeepEqual(got.Properties, msg.Properties) {
			t.Fatalf("sent message = %+v, want %+v", got, msg)
		}
		e = b.get(t, msg.ID)
		if e.Status != StatusSent || e.BrokerMessageID != "BROKER-1" || e.SentAt == nil || e.ClaimUntil != nil {
			t.Fatalf("entry after send = %+v", e)
		}
		if !strings.HasPrefix(e.ClaimedBy, r.ID()+"#") {
			t.Fatalf("claimed_by = %q, want the relay's token", e.ClaimedBy)
		}
		if st := r.Stats(); st.Claimed != 1 || st.Sent != 1 || st.Failures != 0 {
			t.Fatalf("relay stats = %+v", st)
		}
		// Nothing left to claim.
		if n, err := r.RunOnce(context.Background()); err != nil || n != 0 {
			t.Fatalf("second RunOnce = %d, %v; want 0", n, err)
		}
	})
}

func TestEnqueueValidation(t *testing.T) {
	b := setup(t, testenv.Databases()[0], Config{MaxBodySize: 16})
	cases := []struct {
		name string
		msg  *idemq.Message
		want error
	}{
		{"nil message", nil, ErrInvalidMessage},
		{"empty topic", &idemq.Message{Body: []byte("x")}, ErrInvalidMessage},
		{"body too large", &idemq.Message{Topic: "t", Body: make([]byte, 17)}, ErrBodyTooLarge},
		{"delay not a number", &idemq.Message{Topic: "t", Properties: map[string]string{PropertyDelayLevel: "soon"}}, ErrInvalidMessage},
		{"delay out of range", &idemq.Message{Topic: "t", Properties: map[string]string{PropertyDelayLevel: "19"}}, ErrInvalidMessage},
		{"sharding key too long", &idemq.Message{Topic: "t", Properties: map[string]string{PropertyShardingKey: strings.Repeat("k", 192)}}, ErrInvalidMessage},
		{"topic too long", &idemq.Message{Topic: strings.Repeat("t", 256)}, ErrInvalidMessage},
		{"ID too long", &idemq.Message{ID: strings.Repeat("1", 129), Topic: "t"}, ErrInvalidMessage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := b.db.Transaction(func(tx *gorm.DB) error { return b.ob.Enqueue(tx, c.msg) })
			if !errors.Is(err, c.want) {
				t.Fatalf("Enqueue error = %v, want %v", err, c.want)
			}
		})
	}
	if err := b.ob.Enqueue(nil, &idemq.Message{Topic: "t"}); !errors.Is(err, ErrNilTx) {
		t.Fatalf("Enqueue(nil tx) = %v, want ErrNilTx", err)
	}
	if st := b.stats(t); st.Pending != 0 {
		t.Fatalf("invalid messages wrote %d rows", st.Pending)
	}

	// An ID already on the message, or in its property, is kept.
	withID := &idemq.Message{ID: "given-1", Topic: "t"}
	withProp := &idemq.Message{Topic: "t", Properties: map[string]string{idemq.PropertyMessageID: "given-2"}}
	b.enqueue(t, withID, withProp)
	if withID.ID != "given-1" || withProp.ID != "given-2" {
		t.Fatalf("IDs = %q, %q; want the given ones", withID.ID, withProp.ID)
	}
	// The message ID is unique.
	err := b.db.Transaction(func(tx *gorm.DB) error { return b.ob.Enqueue(tx, &idemq.Message{ID: "given-1", Topic: "t"}) })
	if err == nil {
		t.Fatal("second Enqueue with the same message ID succeeded")
	}
}

func TestSenderRecoversNothingLost(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", 300)
		// The broker is down for the first 120 calls, then recovers.
		s := &recSender{fail: func(_ *idemq.Message, call int) error {
			if call <= 120 {
				return errBroker
			}
			return nil
		}}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var relays []*Relay
		done := make(chan error, 2)
		for i := 0; i < 2; i++ {
			r := newRelay(t, b.ob, s, fastRetry(RelayConfig{BatchSize: 20, MaxAttempts: 1000}))
			relays = append(relays, r)
			go func() { r.run(ctx); done <- nil }()
		}
		waitFor(t, "the backlog to drain", func() bool { return b.stats(t).Pending == 0 })
		cancel()
		for range relays {
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		}
		got := s.delivered()
		for _, id := range ids {
			if got[id] != 1 {
				t.Fatalf("message %s delivered %d times, want 1", id, got[id])
			}
		}
		if len(got) != len(ids) {
			t.Fatalf("delivered %d distinct messages, want %d", len(got), len(ids))
		}
		st := b.stats(t)
		if st.Sent != 300 || st.Failed != 0 {
			t.Fatalf("stats = %+v, want 300 sent, 0 failed", st)
		}
		var failures int64
		for _, r := range relays {
			failures += r.Stats().Failures
		}
		if failures != 120 {
			t.Fatalf("relays counted %d failures, want 120", failures)
		}
	})
}

func TestRelayDiesBetweenSendAndMark(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueue(t, &idemq.Message{Topic: "orders", Body: []byte("pay")})
		s := &recSender{}
		dead := newRelay(t, b.ob, s, RelayConfig{ID: "dead", Visibility: 1 << 40})
		dead.skipMark = func(string) bool { return true } // dies after the broker confirmed
		if n, err := dead.RunOnce(context.Background()); err != nil || n != 1 {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		e := b.get(t, ids[0])
		if e.Status != StatusPending || !strings.HasPrefix(e.ClaimedBy, "dead#") || e.ClaimUntil == nil {
			t.Fatalf("entry of the dead relay's row = %+v", e)
		}
		next := newRelay(t, b.ob, s, RelayConfig{ID: "next"})
		if n, err := next.RunOnce(context.Background()); err != nil || n != 0 {
			t.Fatalf("RunOnce before the deadline = %d, %v; want 0 (row still claimed)", n, err)
		}
		// Let the deadline pass.
		expr, arg := b.ago(time1s)
		b.exec(t, "UPDATE "+b.ob.Table()+" SET claim_until = "+expr, arg)
		if n, err := next.RunOnce(context.Background()); err != nil || n != 1 {
			t.Fatalf("RunOnce after the deadline = %d, %v; want 1", n, err)
		}
		if len(s.calls) != 2 || s.calls[0].msg.ID != ids[0] || s.calls[1].msg.ID != ids[0] {
			t.Fatalf("sends = %d, want the same message ID twice", len(s.calls))
		}
		e = b.get(t, ids[0])
		if e.Status != StatusSent || !strings.HasPrefix(e.ClaimedBy, "next#") {
			t.Fatalf("entry after re-send = %+v", e)
		}
		// The zombie's late mark is fenced off by the claim token.
		row := sendRow{ID: e.ID, MessageID: e.MessageID}
		dead.markSent(context.Background(), []sentRow{{row: &row, brokerID: "LATE"}}, "dead#1")
		if got := b.get(t, ids[0]); got.BrokerMessageID == "LATE" {
			t.Fatal("a zombie relay overwrote its successor's mark")
		}
		if dead.Stats().LostClaims != 1 {
			t.Fatalf("LostClaims = %d, want 1", dead.Stats().LostClaims)
		}
	})
}

func TestClaimDeadlineByDatabaseClock(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueue(t, &idemq.Message{Topic: "orders"})
		s := &recSender{}
		// The claim must outlast SendTimeout by more than a loaded machine's
		// claim round trip, or the first relay rightly releases the row unsent.
		cfg := RelayConfig{Visibility: 1000 * time1ms, SendTimeout: 100 * time1ms}
		dead := newRelay(t, b.ob, s, cfg)
		dead.skipMark = func(string) bool { return true }
		if n, err := dead.RunOnce(context.Background()); err != nil || n != 1 {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		if got := s.delivered()[ids[0]]; got != 1 {
			t.Fatalf("first relay sent the message %d times, want 1", got)
		}
		next := newRelay(t, b.ob, s, cfg)
		waitFor(t, "the claim to expire", func() bool {
			n, err := next.RunOnce(context.Background())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			return n == 1
		})
		if got := s.delivered()[ids[0]]; got != 2 {
			t.Fatalf("message sent %d times, want 2 (the re-send after the deadline)", got)
		}
		if e := b.get(t, ids[0]); e.Status != StatusSent {
			t.Fatalf("status = %v, want sent", e.Status)
		}
	})
}

func TestMaxAttemptsThenRedrive(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueue(t, &idemq.Message{Topic: "orders"}, &idemq.Message{Topic: "audit"})
		var healthy bool
		s := &recSender{fail: func(*idemq.Message, int) error {
			if healthy {
				return nil
			}
			return errBroker
		}}
		var finals []string
		cfg := fastRetry(RelayConfig{MaxAttempts: 3})
		cfg.hooks.Failed = func(_, id string, _ error, attempts int, final bool) {
			if final {
				finals = append(finals, id)
			}
		}
		r := newRelay(t, b.ob, s, cfg)
		drain(t, b, r)
		if s.callCount() != 6 {
			t.Fatalf("sender called %d times, want 3 attempts x 2 messages", s.callCount())
		}
		for _, id := range ids {
			e := b.get(t, id)
			if e.Status != StatusFailed || e.Attempts != 3 || !strings.Contains(e.LastError, "attempts exhausted (3/3)") ||
				!strings.Contains(e.LastError, errBroker.Error()) {
				t.Fatalf("entry = %+v, want failed after 3 attempts with the broker error", e)
			}
		}
		if len(finals) != 2 || r.Stats().Failed != 2 {
			t.Fatalf("final failures reported = %v, counter %d", finals, r.Stats().Failed)
		}
		if st := b.stats(t); st.Failed != 2 || st.Pending != 0 {
			t.Fatalf("stats = %+v", st)
		}

		if _, err := b.ob.Redrive(context.Background(), RedriveFilter{}); !errors.Is(err, ErrEmptyFilter) {
			t.Fatalf("Redrive(empty) = %v, want ErrEmptyFilter", err)
		}
		healthy = true
		n, err := b.ob.Redrive(context.Background(), RedriveFilter{MessageIDs: []string{ids[0]}})
		if err != nil || n != 1 {
			t.Fatalf("Redrive by ID = %d, %v", n, err)
		}
		e := b.get(t, ids[0])
		if e.Status != StatusPending || e.Attempts != 0 {
			t.Fatalf("redriven entry = %+v", e)
		}
		drain(t, b, r)
		if got := s.delivered(); got[ids[0]] != 1 || got[ids[1]] != 0 {
			t.Fatalf("deliveries after redrive by ID = %v", got)
		}
		if n, err := b.ob.Redrive(context.Background(), RedriveFilter{Topic: "audit"}); err != nil || n != 1 {
			t.Fatalf("Redrive by topic = %d, %v", n, err)
		}
		drain(t, b, r)
		if got := s.delivered(); got[ids[1]] != 1 {
			t.Fatalf("deliveries after redrive by topic = %v", got)
		}
		if n, err := b.ob.Redrive(context.Background(), RedriveFilter{All: true}); err != nil || n != 0 {
			t.Fatalf("Redrive(all) with nothing failed = %d, %v", n, err)
		}
		for _, c := range s.calls {
			if c.msg.ID != ids[0] && c.msg.ID != ids[1] {
				t.Fatalf("a re-send changed the message ID to %q", c.msg.ID)
			}
		}
	})
}

func TestBadRowsFailAtOnceAndDoNotBlock(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		errUnknownTopic := errors.New("topic not exist")
		s := &recSender{fail: func(m *idemq.Message, _ int) error {
			if m.Topic == "nope" {
				return idemq.Permanent(errUnknownTopic)
			}
			return nil
		}}
		ids := b.enqueue(t,
			&idemq.Message{Topic: "nope", Body: []byte("1")},
			&idemq.Message{Topic: "orders", Body: make([]byte, 64)},
			&idemq.Message{Topic: "orders", Body: []byte("3")},
		)
		// The relay's outbox allows smaller bodies than the one that
		// enqueued (a lowered limit, or a row written by hand).
		small, err := New(b.db, Config{IDSource: &seqIDs{}, TablePrefix: b.prefix, MaxBodySize: 32, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		r := newRelay(t, small, s, RelayConfig{BatchSize: 1, MaxAttempts: 10})
		for i := 0; i < 3; i++ {
			if n, err := r.RunOnce(context.Background()); err != nil || n != 1 {
				t.Fatalf("RunOnce %d = %d, %v", i, n, err)
			}
		}
		unknown, big, good := b.get(t, ids[0]), b.get(t, ids[1]), b.get(t, ids[2])
		if unknown.Status != StatusFailed || unknown.Attempts != 1 || !strings.Contains(unknown.LastError, "permanent: topic not exist") {
			t.Fatalf("unknown-topic row = %+v", unknown)
		}
		if big.Status != StatusFailed || !strings.Contains(big.LastError, "body too large") {
			t.Fatalf("too-large row = %+v", big)
		}
		if good.Status != StatusSent {
			t.Fatalf("row behind the bad ones = %+v, want sent", good)
		}
		if got := s.delivered(); got[ids[1]] != 0 {
			t.Fatal("the too-large body reached the sender")
		}
	})
}

func TestShutdownReleasesWithoutCountingAnAttempt(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", 3)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := &recSender{fail: func(*idemq.Message, int) error {
			cancel() // shutdown arrives while the first send is in flight
			return context.Canceled
		}}
		r := newRelay(t, b.ob, s, RelayConfig{})
		r.run(ctx)
		if s.callCount() != 1 {
			t.Fatalf("sender called %d times, want 1", s.callCount())
		}
		for _, id := range ids {
			e := b.get(t, id)
			if e.Status != StatusPending || e.Attempts != 0 || e.ClaimUntil != nil {
				t.Fatalf("entry after shutdown = %+v, want pending, unclaimed, 0 attempts", e)
			}
		}
		if r.Stats().Released != 3 {
			t.Fatalf("Released = %d, want 3", r.Stats().Released)
		}
	})
}

func TestSenderPanicIsARetryableFailure(t *testing.T) {
	b := setup(t, testenv.Databases()[0], Config{})
	ids := b.enqueue(t, &idemq.Message{Topic: "orders"})
	s := &recSender{fail: func(*idemq.Message, int) error { panic("boom") }}
	r := newRelay(t, b.ob, s, RelayConfig{})
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := b.get(t, ids[0])
	if e.Status != StatusPending || e.Attempts != 1 || !strings.Contains(e.LastError, "sender panicked: boom") {
		t.Fatalf("entry = %+v", e)
	}
	if !e.NextAttemptAt.After(e.CreatedAt) {
		t.Fatalf("next attempt %v not after creation %v", e.NextAttemptAt, e.CreatedAt)
	}
}

func TestSendNowClaimsLikeARelay(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", 3)
		s := &recSender{}
		fast := newRelay(t, b.ob, s, RelayConfig{})
		n, err := fast.SendNow(context.Background(), ids[0], ids[1])
		if err != nil || n != 2 {
			t.Fatalf("SendNow = %d, %v; want 2", n, err)
		}
		if e := b.get(t, ids[2]); e.Status != StatusPending {
			t.Fatalf("SendNow touched a row it was not asked for: %+v", e)
		}
		// A row a relay holds is not sent by SendNow.
		holder := newRelay(t, b.ob, s, RelayConfig{Visibility: 1 << 40})
		holder.skipMark = func(string) bool { return true }
		if n, _ := holder.RunOnce(context.Background()); n != 1 {
			t.Fatalf("relay claimed %d rows, want 1", n)
		}
		if n, err := fast.SendNow(context.Background(), ids...); err != nil || n != 0 {
			t.Fatalf("SendNow of sent and claimed rows = %d, %v; want 0", n, err)
		}
		if got := s.delivered(); got[ids[0]] != 1 || got[ids[1]] != 1 || got[ids[2]] != 1 {
			t.Fatalf("deliveries = %v, want each once", got)
		}
	})
}

// routeSender records the route SendRoute receives.
type routeSender struct {
	recSender
	shard string
	delay int
	props map[string]string
}

func (s *routeSender) SendRoute(ctx context.Context, msg *idemq.Message, shardingKey string, delayLevel int) (string, error) {
	s.shard, s.delay, s.props = shardingKey, delayLevel, msg.Properties
	return s.Send(ctx, msg)
}

func TestRouteSenderGetsShardingKeyAndDelay(t *testing.T) {
	b := setup(t, testenv.Databases()[0], Config{})
	b.enqueue(t, &idemq.Message{Topic: "orders", Properties: map[string]string{PropertyShardingKey: "order:9", PropertyDelayLevel: "2", "x": "y"}})
	s := &routeSender{}
	if n, err := newRelay(t, b.ob, s, RelayConfig{}).RunOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if s.shard != "order:9" || s.delay != 2 || s.props["x"] != "y" {
		t.Fatalf("route = %q, %d, props %v", s.shard, s.delay, s.props)
	}
	if _, ok := s.props[PropertyShardingKey]; ok {
		t.Fatal("the sharding key stayed in the properties of a routed send")
	}
}
