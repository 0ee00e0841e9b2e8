package console_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/admin/console"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/producer/outbox"
)

type seqOutboxIDs struct{ n int }

func (s *seqOutboxIDs) NextID() (string, error) {
	s.n++
	return fmt.Sprintf("1987%011d", 424242+s.n), nil
}

// TestConsoleScreenshots renders the main pages over a realistic
// database, checks that times are shown in the browser's zone, not the
// server's, and, with IDEMQ_CONSOLE_SCREENSHOTS=docs/console, saves the
// pages for the README:
//
//	IDEMQ_CONSOLE_SCREENSHOTS=$PWD/docs/console go test -run TestConsoleScreenshots ./admin/console/
func TestConsoleScreenshots(t *testing.T) {
	b := setup(t, testenv.Databases()[0])
	ctx := b.ctx
	chain, err := middleware.Standard(middleware.StandardConfig{Store: b.store, Ledger: b.store, Logger: quiet,
		DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 3}})
	if err != nil {
		t.Fatal(err)
	}
	fail := map[string]error{}
	h, err := idemq.Chain(idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error { return fail[m.ID] }), chain...)
	if err != nil {
		t.Fatal(err)
	}
	send := func(group, topic, id string, body string, err error) {
		fail[id] = err
		m := &idemq.Message{ID: id, Group: group, Topic: topic, Tags: "v2", Attempt: 1, Body: []byte(body),
			Keys: []string{"order-" + id[len(id)-4:]}, Properties: map[string]string{idemq.PropertyMessageID: id, "tenant": "acme", "trace_id": "4bf92f3577b34da6"}}
		_ = h.Handle(ctx, m)
	}
	for i := range 180 {
		send("payments", "payouts", fmt.Sprintf("19870000000%04d", i), `{"payout":1}`, nil)
	}
	for i := range 64 {
		send("notifications", "emails", fmt.Sprintf("19871000000%04d", i), `{"to":"a@example.com"}`, nil)
	}
	reasons := []struct {
		group, topic string
		n            int
		err          func(i int) error
		body         func(i int) string
	}{
		{"payments", "payouts", 7, func(i int) error {
			return idemq.Permanent(fmt.Errorf("charge order %d: payment API \"timeout\" after 30s", 88120+i))
		}, func(i int) string {
			return fmt.Sprintf(`{"order":%d,"amount":{"value":"129.90","currency":"EUR"},"wallet":"w-4711","customer":{"id":"c-%d","tier":"gold"}}`, 88120+i, 5000+i)
		}},
		{"payments", "payouts", 3, func(i int) error { return idemq.Permanent(fmt.Errorf("wallet %d frozen by compliance", 4711+i)) },
			func(i int) string { return fmt.Sprintf(`{"order":%d,"wallet":"w-%d"}`, 99000+i, 4711+i) }},
		{"inventory", "stock-moves", 2, func(i int) error {
			return idemq.Permanent(errors.New("decode stock move: invalid character 'x' looking for beginning of value"))
		}, func(i int) string { return "x-legacy-format;sku=A-1;qty=3" }},
	}
	n := 0
	for _, r := range reasons {
		for i := range r.n {
			n++
			send(r.group, r.topic, fmt.Sprintf("19872000000%04d", n), r.body(i), r.err(i))
		}
	}
	// Retrying and stale attempts.
	for i := range 4 {
		id := fmt.Sprintf("19873000000%04d", i)
		send("notifications", "emails", id, `{"to":"b@example.com"}`, fmt.Errorf("smtp: 451 4.7.1 greylisted, try again later (%d)", i))
	}
	if err := b.db.Exec("UPDATE "+b.prefix+"attempts SET first_at = first_at - ?, last_at = last_at - ? WHERE consumer_group = 'notifications'",
		(6 * time.Hour).Milliseconds(), (5 * time.Hour).Milliseconds()).Error; err != nil {
		t.Fatal(err)
	}
	// The outbox: a backlog and two failed rows.
	ob, err := outbox.New(b.db, outbox.Config{IDSource: &seqOutboxIDs{}, TablePrefix: b.prefix, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	enqueue := func(topic, body string) {
		m := &idemq.Message{Topic: topic, Tags: "refund", Body: []byte(body)}
		if err := b.db.Transaction(func(tx *gorm.DB) error { return ob.Enqueue(tx, m) }); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("ledger-sync", `{"entry":7001}`)
	enqueue("ledger-sync", `{"entry":7002}`)
	relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(_ context.Context, m *idemq.Message) (string, error) {
		return "", idemq.Permanent(fmt.Errorf("send: topic %s: no route info of this topic", m.Topic))
	}), outbox.RelayConfig{ID: "relay-a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		enqueue("payouts", fmt.Sprintf(`{"refund":%d}`, 300+i))
	}
	// Earlier operator actions.
	if _, err := b.admin.DiscardDead(admin.WithActor(ctx, "alice"), admin.DeadFilter{Group: "inventory", Topic: "stock-moves", Key: "198720000000011"}, admin.ActionConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.RedriveDead(admin.WithActor(ctx, "bob"), admin.DeadFilter{MessageID: "198720000000010"}, admin.ActionConfig{}); err != nil {
		t.Fatal(err)
	}

	// The service runs in UTC; the operator's browser is in Berlin.
	_, base := b.serve(t, console.Config{Auth: console.Unauthenticated("alice@ops"), Location: time.UTC})
	br := newBrowser(t)
	if _, err := chromedp.Call(br.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	// The first page tells the console the browser's zone and reloads.
	br.run(t, "first visit", chromedp.Navigate(base+"/"), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](`document.getElementById("zone") && document.getElementById("zone").textContent === "Europe/Berlin"`,
			chromedp.WithPollingTimeout(20*time.Second))(ctx, tg)
		return err
	}))
	var first int64
	if err := b.db.Raw("SELECT MIN(id) FROM " + b.prefix + "dead_letters").Scan(&first).Error; err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, path, wait string }{
		{"overview", "/", "table"},
		{"dead-letters", "/dead", "#count"},
		{"groups", "/dead/groups", "table.list"},
		{"dead-letter", fmt.Sprintf("/dead/%d?view=json", first), "#body"},
		{"confirm", "/dead/confirm?action=redrive&group=payments&error=timeout", "#confirm"},
		{"outbox", "/outbox?status=failed", "table.list"},
		{"attempts", "/attempts", "table.list"},
		{"audit", "/audit", "#audit"},
	} {
		br.run(t, p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.wait)))
		if z := br.text(t, "#zone"); z != "Europe/Berlin" {
			t.Fatalf("%s: times shown in %q, not the browser's zone", p.name, z)
		}
		br.screenshot(t, p.name)
	}
	// Times are in the operator's zone: the dead letters died at the
	// database's now, shown in Berlin time.
	br.run(t, "dead letters", chromedp.Navigate(base+"/dead"), chromedp.WaitVisible(chromedp.CSS("#count")))
	var at int64
	if err := b.db.Raw("SELECT MAX(dead_at) FROM " + b.prefix + "dead_letters").Scan(&at).Error; err != nil {
		t.Fatal(err)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	want := time.UnixMilli(at).In(berlin).Format("2006-01-02 15:04:05 MST")
	if s := br.text(t, "table.list tbody tr td:nth-child(3)"); s != want {
		t.Fatalf("newest dead letter died at %q, want %q", s, want)
	}
	if os.Getenv("IDEMQ_CONSOLE_SCREENSHOTS") == "" {
		t.Log("set IDEMQ_CONSOLE_SCREENSHOTS to a directory to save the screenshots")
	}
}
