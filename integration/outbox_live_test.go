//go:build rocketmq

// Live tests: see doc.go for why they are behind the rocketmq tag.

package integration_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/producer/outbox"
)

// lostConfirm sends through the real producer, then, for the first n
// sends, reports a failure as if the broker's confirm had been lost (or the
// relay had died between send and mark): the broker has the message, the
// outbox does not know it.
type lostConfirm struct {
	p    *producer.Producer
	left atomic.Int64
}

func (s *lostConfirm) Send(ctx context.Context, msg *idemq.Message) (string, error) {
	id, err := s.p.Send(ctx, msg)
	if err == nil && s.left.Add(-1) >= 0 {
		return "", errors.New("confirm lost")
	}
	return id, err
}

func newOutbox(t *testing.T, w *bundle, cfg outbox.Config) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.New(w.store.DB(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ob
}

func enqueue(t *testing.T, w *bundle, ob *outbox.Outbox, msgs ...*idemq.Message) {
	t.Helper()
	err := w.store.DB().Transaction(func(tx *gorm.DB) error {
		for _, m := range msgs {
			if err := ob.Enqueue(tx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLiveOutboxResendIsAbsorbedByDedup: rows whose confirm was lost are
// re-sent by the relay with the same message IDs; the broker holds two
// copies of each, and the consumer's dedup makes each effect happen once.
func TestLiveOutboxResendIsAbsorbedByDedup(t *testing.T) {
	w := setup(t)
	w.consume(t, "cg-outbox", "grants", 5, func(ctx context.Context, msg *idemq.Message) error {
		return writeEffect(ctx, msg)
	})
	ids, err := msgid.NewGenerator(msgid.FixedNode(12), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ob := newOutbox(t, w, outbox.Config{IDSource: ids, TablePrefix: "ob_"})
	const n = 30
	msgs := make([]*idemq.Message, n)
	for i := range msgs {
		msgs[i] = &idemq.Message{Topic: "grants", Body: []byte("grant")}
	}
	enqueue(t, w, ob, msgs...)
	sender := &lostConfirm{p: w.p}
	sender.left.Store(10)
	relay, err := outbox.NewRelay(ob, sender, outbox.RelayConfig{
		PollInterval: 10 * time.Millisecond,
		Backoff:      outbox.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer relay.Shutdown(context.Background())

	eventually(t, 30*time.Second, "every row sent", func() bool {
		st, err := ob.Stats(context.Background())
		return err == nil && st.Sent == n
	})
	copies := map[string]int{}
	for _, m := range w.b.Messages("grants") {
		copies[m.GetProperty(idemq.PropertyMessageID)]++
	}
	twice := 0
	for _, m := range msgs {
		if copies[m.ID] == 2 {
			twice++
		}
	}
	if twice != 10 {
		t.Fatalf("%d messages reached the broker twice, want the 10 whose confirm was lost", twice)
	}
	eventually(t, 30*time.Second, "one effect per message", func() bool {
		for _, m := range msgs {
			if w.effectCount(t, m.ID) != 1 {
				return false
			}
		}
		return true
	})
	// Every copy, the re-sent ones included, was acknowledged.
	w.settled(t, "cg-outbox", "grants")
	for _, m := range msgs {
		if c := w.effectCount(t, m.ID); c != 1 {
			t.Fatalf("message %s had %d effects", m.ID, c)
		}
	}
}

// TestLiveOutboxBrokerRejectsOversizedBody: a body the outbox accepts but
// the broker refuses ends failed with the broker's reason, at once, and the
// rows behind it are still sent.
func TestLiveOutboxBrokerRejectsOversizedBody(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{MaxMessageSize: 1024, Topics: []string{"grants"}})
	ids, err := msgid.NewGenerator(msgid.FixedNode(13), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(producer.Config{NameServers: []string{b.Addr()}, IDSource: ids, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	w := setup(t)
	ob := newOutbox(t, w, outbox.Config{IDSource: ids, TablePrefix: "obig_"})
	// Random bytes: the client compresses bodies over 4 KiB, and a
	// compressible one would fit.
	body := make([]byte, 8192)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	big := &idemq.Message{Topic: "grants", Body: body}
	after := &idemq.Message{Topic: "grants", Body: []byte("small")}
	enqueue(t, w, ob, big, after)
	relay, err := outbox.NewRelay(ob, p, outbox.RelayConfig{MaxAttempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	e, err := ob.Get(context.Background(), big.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != outbox.StatusFailed || e.Attempts != 1 || !strings.Contains(e.LastError, "CODE: 13") {
		t.Fatalf("oversized row: status %v attempts %d error %q; want failed at once with the broker's code 13", e.Status, e.Attempts, e.LastError)
	}
	if e, err := ob.Get(context.Background(), after.ID); err != nil || e.Status != outbox.StatusSent {
		t.Fatalf("row behind the oversized one: %+v, %v", e, err)
	}
}
