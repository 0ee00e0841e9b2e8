//go:build rocketmq

// The browser test through a real transport: the in-process test broker,
// a producer and a push consumer. It runs without -race (see scripts/test:
// the RocketMQ client has a data race of its own).

package console_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/rlog"
	"github.com/chromedp/chromedp"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/admin/console"
	"github.com/idemq/idemq/consumer"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
)

func init() { rlog.SetLogLevel("error") }

// TestLiveBrowserRedriveThroughBroker: a payout fails permanently at a
// real consumer and is dead-lettered; the operator opens it in the
// console and redrives it; the broker delivers it again and the consumer
// processes it exactly once.
func TestLiveBrowserRedriveThroughBroker(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			ctx := b.ctx
			if err := b.db.Exec("CREATE TABLE " + b.prefix + "effects (k VARCHAR(191) NOT NULL)").Error; err != nil {
				t.Fatal(err)
			}
			quietLog := slog.New(slog.DiscardHandler)
			// The strict test broker, like a real name server, knows only
			// topics that were created.
			broker := rmqtest.NewTest(t, rmqtest.Config{TimeScale: 0.01, Topics: []string{"payouts"}})
			ids, err := msgid.NewGenerator(msgid.FixedNode(9), msgid.GeneratorConfig{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := producer.New(producer.Config{NameServers: []string{broker.Addr()}, IDSource: ids, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
			// The console redrives through a producer of its own that
			// issues no IDs: the message keeps its ID.
			rp, err := producer.New(producer.Config{NameServers: []string{broker.Addr()}, IDSource: admin.NoIDs{}, Group: "console_redrive", Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			if err := rp.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rp.Shutdown(context.Background()) })
			b.sent.deliver = admin.ProducerSender(rp)

			chain, err := middleware.Standard(middleware.StandardConfig{Store: b.store, Ledger: b.store, Logger: quietLog,
				DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 3}})
			if err != nil {
				t.Fatal(err)
			}
			var fixed atomic.Bool
			handler := func(ctx context.Context, msg *idemq.Message) error {
				if strings.HasPrefix(string(msg.Body), "payout") && !fixed.Load() {
					return idemq.Permanent(errors.New("wallet 4711 frozen"))
				}
				return dedup.Tx(ctx).Exec("INSERT INTO "+b.prefix+"effects (k) VALUES (?)", msg.ID).Error
			}
			c, err := consumer.New(consumer.Config{NameServers: []string{broker.Addr()}, Group: "payments",
				Subscriptions: []consumer.Subscription{{Topic: "payouts"}}, StartFrom: consumer.StartFromFirst, Handler: idemq.HandlerFunc(handler), CustomChain: chain,
				MaxAttempts: 3, RetryPolicy: middleware.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: -1},
				Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Shutdown(context.Background()) })

			msg := &idemq.Message{Topic: "payouts", Body: []byte("payout 88")}
			if _, err := p.SendSync(ctx, msg); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 30*time.Second, "the dead letter", func() bool { return b.waiting(t) == 1 })

			_, base := b.serve(t, console.Config{Auth: console.Unauthenticated("dana")})
			br := newBrowser(t)
			br.run(t, "open the dead-letter list", chromedp.Navigate(base+"/dead"), chromedp.WaitVisible(chromedp.CSS("#count")))
			if s := br.text(t, "table.list tbody"); !strings.Contains(s, msg.ID) || !strings.Contains(s, "wallet 4711 frozen") {
				t.Fatalf("dead-letter list: %q", s)
			}
			fixed.Store(true)
			br.run(t, "open, redrive, confirm", chromedp.Click(chromedp.CSS(`table.list tbody a[href*="/dead/"]`)),
				chromedp.WaitVisible(chromedp.CSS("#redrive")), chromedp.Click(chromedp.CSS("#redrive")),
				chromedp.WaitVisible(chromedp.CSS("#confirm")), chromedp.Click(chromedp.CSS("#confirm")),
				chromedp.WaitVisible(chromedp.CSS("#result")))
			if s := br.text(t, "#result"); !strings.Contains(s, "Redrove 1 of 1") {
				t.Fatalf("result: %q", s)
			}
			testenv.Eventually(t, 30*time.Second, "the redriven payout's effect", func() bool { return b.effects(t, msg.ID) == 1 })
			// Once only: a later message on the topic is processed, and the
			// payout still has one effect.
			sentinel := &idemq.Message{Topic: "payouts", Body: []byte("sentinel")}
			if _, err := p.SendSync(ctx, sentinel); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 30*time.Second, "the sentinel", func() bool { return b.effects(t, sentinel.ID) == 1 })
			if n := b.effects(t, msg.ID); n != 1 {
				t.Fatalf("payout effects = %d, want 1", n)
			}
		})
	}
}
