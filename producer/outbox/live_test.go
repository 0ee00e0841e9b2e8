//go:build rocketmq

// Tests through the real RocketMQ client (producer.Producer) and the
// in-process broker (integration/rmqtest). They sit behind the rocketmq
// build tag with the other live-client tests, which scripts/test runs
// under -race.

package outbox

import (
	"context"
	"testing"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
)

func liveProducer(t *testing.T, b *rmqtest.Broker, ids msgid.Source) *producer.Producer {
	t.Helper()
	p, err := producer.New(producer.Config{NameServers: []string{b.Addr()}, Group: "outbox-live", IDSource: ids, Logger: quiet})
	if err != nil {
		t.Fatalf("producer.New: %v", err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("producer.New: %v", err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

func TestLiveRelayThroughBrokerPause(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		gen, err := msgid.NewGenerator(msgid.FixedNode(7), msgid.GeneratorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		b := setup(t, d, Config{IDSource: gen})
		broker := rmqtest.NewTest(t, rmqtest.Config{Logger: quiet, Topics: []string{"live-orders"}})
		p := liveProducer(t, broker, gen)

		first := b.enqueueN(t, "live-orders", 20)
		r := newRelay(t, b.ob, p, fastRetry(RelayConfig{MaxAttempts: 1000, SendTimeout: 5 * time1s}))
		drain(t, b, r)

		// The broker stops answering; sends fail and are retried.
		broker.Pause()
		second := b.enqueueN(t, "live-orders", 20)
		waitFor(t, "sends to fail while the broker is paused", func() bool {
			if _, err := r.RunOnce(context.Background()); err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			return r.Stats().Failures >= 5
		})
		if st := b.stats(t); st.Pending == 0 {
			t.Fatal("rows were marked sent while the broker was paused")
		}
		broker.Resume()
		drain(t, b, r)

		got := map[string]int{}
		for _, m := range broker.Messages("live-orders") {
			got[m.GetProperty(idemq.PropertyMessageID)]++
		}
		for _, id := range append(first, second...) {
			if got[id] == 0 {
				t.Fatalf("message %s never reached the broker", id)
			}
		}
		for _, id := range append(first, second...) {
			e := b.get(t, id)
			if e.Status != StatusSent || e.BrokerMessageID == "" {
				t.Fatalf("entry = %+v, want sent with a broker message ID", e)
			}
		}
		if st := b.stats(t); st.Failed != 0 {
			t.Fatalf("stats = %+v", st)
		}
	})
}
