package console_test

// Browser tests: headless Chromium (Debian's chromium package, which
// scripts/test installs) driven by chromedp against the console on every
// database. Without chromium they skip, and under CI=true they fail.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/admin/console"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/producer/outbox"
)

// browser is one headless Chromium tab and what it saw.
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	dialogs []string
}

// recordViolations is evaluated in every document before its own scripts:
// it records Content-Security-Policy violations, which the page's CSP
// reports for any inline script or handler that tried to run.
const recordViolations = `window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sample || ""));
});`

// newBrowser starts Chromium with a fresh profile for the test.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("chromium is not installed (scripts/test installs it with apt-get as root): %v", err)
		}
		t.Skipf("chromium is not installed (scripts/test installs it): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	b := &browser{ctx: ctx}
	err = chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			b.mu.Lock()
			b.dialogs = append(b.dialogs, e.Message)
			b.mu.Unlock()
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}()
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: recordViolations}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return b
}

func (b *browser) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return s
}

func (b *browser) location(t *testing.T) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (b *browser) dialogsSeen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// pageState is what the XSS checks read from a rendered page.
type pageState struct {
	Title      string   `json:"title"`
	H1         string   `json:"h1"`
	Violations []string `json:"violations"`
	Injected   bool     `json:"injected"`
	Scripts    int      `json:"scripts"`
	Handlers   int      `json:"handlers"`
}

const readState = `(function () {
  var handlers = 0;
  document.querySelectorAll("*").forEach(function (el) {
    for (var i = 0; i < el.attributes.length; i++) {
      if (/^on/i.test(el.attributes[i].name)) handlers++;
    }
  });
  return {
    title: document.title,
    h1: (document.querySelector("h1") || {}).textContent || "",
    violations: window.__violations || ["(the violation recorder did not run)"],
    injected: !!document.querySelector("#injected, #injected2, .injected, img[src='x']"),
    scripts: document.scripts.length,
    handlers: handlers
  };
})()`

// screenshot saves the page as docs/console/NAME.png when
// IDEMQ_CONSOLE_SCREENSHOTS names the directory.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("IDEMQ_CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// consumerChain is a consumer's standard chain over the bundle's store,
// with a handler that fails permanently until fixed and otherwise
// records one effect per message ID in the same transaction.
func (b *bundle) consumerChain(t *testing.T, fixed *bool, mu *sync.Mutex) idemq.Handler {
	t.Helper()
	if err := b.db.Exec("CREATE TABLE " + b.prefix + "effects (k VARCHAR(191) NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	chain, err := middleware.Standard(middleware.StandardConfig{Store: b.store, Ledger: b.store,
		DeadLetter: middleware.DeadLetterConfig{MaxAttempts: 3}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h, err := idemq.Chain(idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		mu.Lock()
		ok := *fixed
		mu.Unlock()
		if !ok {
			return idemq.Permanent(errors.New("wallet 4711 frozen"))
		}
		return dedup.Tx(ctx).Exec("INSERT INTO "+b.prefix+"effects (k) VALUES (?)", msg.ID).Error
	}), chain...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (b *bundle) effects(t *testing.T, id string) int64 {
	t.Helper()
	var n int64
	if err := b.db.Raw("SELECT COUNT(*) FROM "+b.prefix+"effects WHERE k = ?", id).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func deliver(ctx context.Context, h idemq.Handler, m *idemq.Message) error {
	c := m.Clone()
	c.Group, c.Attempt = "payments", 1
	return h.Handle(ctx, c)
}

// TestBrowserRedriveProcessedOnce: a permanently failing message appears
// in the dead-letter list; the operator opens it, redrives it, confirms,
// and the consumer processes it exactly once, redeliveries included.
func TestBrowserRedriveProcessedOnce(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			var mu sync.Mutex
			fixed := false
			h := b.consumerChain(t, &fixed, &mu)
			msg := &idemq.Message{ID: "pay-7781", Topic: "payouts", Tags: "eu", Body: []byte(`{"payout":88,"wallet":4711}`),
				Properties: map[string]string{idemq.PropertyMessageID: "pay-7781", "tenant": "acme"}}
			if err := deliver(b.ctx, h, msg); err != nil {
				t.Fatalf("the failing delivery was not acknowledged as a dead letter: %v", err)
			}
			if b.waiting(t) != 1 {
				t.Fatal("no dead letter")
			}
			// The broker: a redriven message is delivered to the consumer.
			b.sent.deliver = func(ctx context.Context, m *idemq.Message) error { return deliver(ctx, h, m) }
			_, base := b.serve(t, console.Config{Auth: console.Unauthenticated("alice")})
			br := newBrowser(t)
			br.run(t, "open the dead-letter list", chromedp.Navigate(base+"/dead"), chromedp.WaitVisible(chromedp.CSS(`#count`)))
			if s := br.text(t, "table.list tbody"); !strings.Contains(s, "pay-7781") || !strings.Contains(s, "wallet 4711 frozen") {
				t.Fatalf("dead-letter list: %q", s)
			}
			br.run(t, "open the dead letter", chromedp.Click(chromedp.CSS(`table.list tbody a[href*="/dead/"]`)),
				chromedp.WaitVisible(chromedp.CSS(`#redrive`)))
			if s := br.text(t, "#message-id"); s != "pay-7781" {
				t.Fatalf("detail shows message %q", s)
			}
			br.run(t, "JSON view", chromedp.Click(chromedp.CSS(`a[href$="view=json"]`)), chromedp.WaitVisible(chromedp.CSS(`#body`)))
			if s := br.text(t, "#body"); !strings.Contains(s, "\"payout\": 88") {
				t.Fatalf("JSON body view: %q", s)
			}
			mu.Lock()
			fixed = true
			mu.Unlock()
			br.run(t, "redrive", chromedp.Click(chromedp.CSS(`#redrive`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)))
			if s := br.text(t, "#confirm-count"); !strings.Contains(s, "Redrive 1 item?") {
				t.Fatalf("confirmation: %q", s)
			}
			br.run(t, "confirm", chromedp.Click(chromedp.CSS(`#confirm`)), chromedp.WaitVisible(chromedp.CSS(`#result`)))
			if s := br.text(t, "#result"); !strings.Contains(s, "Redrove 1 of 1") {
				t.Fatalf("result: %q", s)
			}
			if n := b.effects(t, "pay-7781"); n != 1 {
				t.Fatalf("effects after the redrive = %d, want 1", n)
			}
			// The original's late redelivery and a second delivery of the
			// redriven message are duplicates.
			if err := deliver(b.ctx, h, msg); err != nil {
				t.Fatal(err)
			}
			if err := deliver(b.ctx, h, b.sent.first()); err != nil {
				t.Fatal(err)
			}
			if n := b.effects(t, "pay-7781"); n != 1 || b.sent.count() != 1 {
				t.Fatalf("effects = %d, sends = %d; want 1 and 1", n, b.sent.count())
			}
			// A second redrive from the same (now stale) page finds nothing.
			br.run(t, "back to the dead letter", chromedp.Navigate(base+"/dead/confirm?action=redrive&message_id=pay-7781"),
				chromedp.WaitVisible(chromedp.CSS(`#confirm-count`)))
			if s := br.text(t, "#confirm-count"); !strings.Contains(s, "Nothing matches") {
				t.Fatalf("second redrive: %q", s)
			}
			recs := b.auditActions(t)
			if len(recs) != 1 || recs[0].Actor != "alice" || recs[0].Action != "dead.redrive" || recs[0].Count != 1 {
				t.Fatalf("audit: %+v", recs)
			}
		})
	}
}

// TestBrowserDiscardInAuditLog: a discard from the detail page shows in
// the audit log with the operator's name; then the rest of the page is
// selected and discarded at once.
func TestBrowserDiscardInAuditLog(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			for i := range 3 {
				b.bury(t, "payments", "payouts", fmt.Sprintf("poison-%d", i), fmt.Sprintf("decode payout %d: unexpected token", 100+i),
					[]byte("\x00\x01binary"), map[string]string{"source": "legacy"})
			}
			_, base := b.serve(t, console.Config{Auth: console.Middleware(func(next http.Handler) http.Handler { return next },
				func(*http.Request) string { return "bob@ops" })})
			br := newBrowser(t)
			br.run(t, "error groups", chromedp.Navigate(base+"/dead/groups"), chromedp.WaitVisible(chromedp.CSS(`table.list`)))
			if s := br.text(t, "table.list tbody"); !strings.Contains(s, "decode payout #: unexpected token") {
				t.Fatalf("groups: %q", s)
			}
			br.run(t, "open one", chromedp.Navigate(base+"/dead?key=poison-1"), chromedp.Click(chromedp.CSS(`table.list tbody a[href*="/dead/"]`)),
				chromedp.WaitVisible(chromedp.CSS(`#discard`)), chromedp.Click(chromedp.CSS(`a[href$="view=hex"]`)),
				chromedp.WaitVisible(chromedp.CSS(`#body`)))
			if s := br.text(t, "#body"); !strings.Contains(s, "00 01 62 69 6e 61 72 79") {
				t.Fatalf("hex view: %q", s)
			}
			br.run(t, "discard", chromedp.Click(chromedp.CSS(`#discard`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
				chromedp.Click(chromedp.CSS(`#confirm`)), chromedp.WaitVisible(chromedp.CSS(`#result`)))
			if s := br.text(t, "#result"); !strings.Contains(s, "Discarded 1 of 1") {
				t.Fatalf("result: %q", s)
			}
			br.run(t, "audit log", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS(`#audit`)))
			row := br.text(t, "#audit tbody tr")
			if !strings.Contains(row, "dead.discard") || !strings.Contains(row, "bob@ops") || !strings.Contains(row, "ids=") {
				t.Fatalf("audit row: %q", row)
			}
			if b.waiting(t) != 2 {
				t.Fatalf("waiting = %d, want 2", b.waiting(t))
			}
			// The rest, selected with the page's select-all box.
			br.run(t, "select the page", chromedp.Navigate(base+"/dead"), chromedp.WaitVisible(chromedp.CSS("input.select-all")),
				chromedp.Click(chromedp.CSS("input.select-all")), chromedp.Click(chromedp.CSS("#discard-selected")),
				chromedp.WaitVisible(chromedp.CSS("#confirm")))
			if s := br.text(t, "#confirm-count"); !strings.Contains(s, "Discard 2 items?") {
				t.Fatalf("confirmation: %q", s)
			}
			br.run(t, "confirm", chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
			if b.waiting(t) != 0 || len(b.auditActions(t)) != 2 {
				t.Fatalf("after discarding the selection: %d waiting", b.waiting(t))
			}
		})
	}
}

// TestBrowserCrossSitePostRefused: a page on another site that submits
// the console's own form, token included, to the console is refused; the
// same form from the console's page works.
func TestBrowserCrossSitePostRefused(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			id := b.bury(t, "payments", "payouts", "victim", "boom", []byte("x"), nil)
			// The operator's own SSO lets the browser in wherever the
			// request comes from: only the cross-origin check stands.
			_, base := b.serve(t, console.Config{Auth: console.Unauthenticated("carol")})
			_, page := get(t, client(t), fmt.Sprintf("%s/dead/confirm?action=discard&id=%d", base, id))
			form := confirmForm(t, page)
			var fields strings.Builder
			for k, vs := range form {
				for _, v := range vs {
					fmt.Fprintf(&fields, `<input type="hidden" name="%s" value="%s">`, k, v)
				}
			}
			evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprintf(w, `<!doctype html><title>cute cats</title><form id="f" method="post" action="%s/dead/act">%s</form>
<script>document.getElementById("f").submit()</script>`, base, fields.String())
			}))
			t.Cleanup(evil.Close)
			// localhost and 127.0.0.1 are different sites to the browser.
			evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
			br := newBrowser(t)
			br.run(t, "visit the other site", chromedp.Navigate(evilURL),
				chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
					_, err := chromedp.Poll[chromedp.Void](`location.href.indexOf("/dead/act") >= 0 && document.readyState === "complete"`,
						chromedp.WithPollingTimeout(20*time.Second))(ctx, tg)
					return err
				}))
			loc, body := br.location(t), br.text(t, "body")
			if !strings.Contains(strings.ToLower(body), "cross-origin") {
				t.Fatalf("cross-site POST to %s answered: %q", loc, body)
			}
			if b.waiting(t) != 1 || len(b.auditActions(t)) != 0 {
				t.Fatal("the cross-site POST discarded the dead letter")
			}
			// The chance was there: the same form from the console's page.
			br.run(t, "same-site confirm", chromedp.Navigate(fmt.Sprintf("%s/dead/confirm?action=discard&id=%d", base, id)),
				chromedp.WaitVisible(chromedp.CSS(`#confirm`)), chromedp.Click(chromedp.CSS(`#confirm`)),
				chromedp.WaitVisible(chromedp.CSS(`#result`)))
			if b.waiting(t) != 0 {
				t.Fatal("the console's own form did not discard")
			}
		})
	}
}

// xss is hostile text: a script element, an element to inject, and
// quotes that would break out of an attribute into an event handler.
const xss = `<script>alert("xss-script")</script><b id="injected">i</b>"><img src=x id="injected2" onerror="alert('xss-img')">' onmouseover='alert(3)' x='`

// invalidUTF8 is bytes that are not UTF-8.
const invalidUTF8 = "\xff\xfe\xfd"

type fixedIDs struct{ id string }

func (f fixedIDs) NextID() (string, error) { return f.id, nil }

// TestBrowserHostileInputEveryPage feeds script tags, attribute-breaking
// quotes, invalid UTF-8 and a 10 MB body through every page: each page
// renders, no dialog opens, no element is injected, no event handler
// appears and the CSP reports no violation (which it would for any
// inline script that tried to run).
func TestBrowserHostileInputEveryPage(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			// Bodies are bytes on every database; text columns hold invalid
			// UTF-8 only on SQLite (PostgreSQL and MariaDB refuse it).
			big := bytes.Repeat([]byte(xss+invalidUTF8), 10<<20/len(xss+invalidUTF8)+1)[:10<<20]
			hostile := xss + invalidUTF8
			if d.Dialect != "sqlite" {
				hostile = xss + "\u00ff\ufffd"
			}
			props := map[string]string{xss: xss, "plain": hostile}
			bigID := b.bury(t, xss, xss, xss, hostile, big, props)
			jsonID := b.bury(t, "payments", "payouts", "json-1", "bad", []byte(`{"note":"`+strings.ReplaceAll(xss, `"`, `\"`)+`"}`), nil)
			// An attempt waiting for a retry, with hostile text.
			if _, err := b.store.RecordFailure(b.ctx, xss, "retry-"+xss[:40], 1, errors.New(hostile)); err != nil {
				t.Fatal(err)
			}
			// A failed outbox row with hostile text everywhere it can hold.
			ob, err := outbox.New(b.db, outbox.Config{IDSource: fixedIDs{"ob-1"}, TablePrefix: b.prefix, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			row := &idemq.Message{Topic: "payouts", Tags: xss, Keys: []string{xss}, Body: big[:1<<20], Properties: props}
			if err := b.db.Transaction(func(tx *gorm.DB) error { return ob.Enqueue(tx, row) }); err != nil {
				t.Fatal(err)
			}
			relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(context.Context, *idemq.Message) (string, error) {
				return "", idemq.Permanent(errors.New(hostile))
			}), outbox.RelayConfig{ID: "relay-" + xss[:20]})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := relay.RunOnce(b.ctx); err != nil {
				t.Fatal(err)
			}
			// An audit record by a hostile actor with a hostile filter.
			if _, err := b.admin.DiscardDead(admin.WithActor(b.ctx, hostile), admin.DeadFilter{Error: hostile + "-nothing"}, admin.ActionConfig{}); err != nil {
				t.Fatal(err)
			}
			// The operator's identity is hostile too.
			_, base := b.serve(t, console.Config{Auth: console.Unauthenticated(xss)})
			q := url.QueryEscape
			pages := []string{
				"/", "/dead", "/dead?state=any", "/dead?error=" + q(hostile) + "&group=" + q(xss) + "&topic=" + q(xss),
				"/dead/groups", "/dead/groups?group=" + q(xss),
				fmt.Sprintf("/dead/%d", bigID), fmt.Sprintf("/dead/%d?view=hex", bigID), fmt.Sprintf("/dead/%d?view=json", bigID),
				fmt.Sprintf("/dead/%d?view=json", jsonID), fmt.Sprintf("/dead/%d?view=%s", jsonID, q(xss)),
				fmt.Sprintf("/dead/confirm?action=discard&id=%d", bigID),
				"/dead/confirm?action=redrive&error=" + q(hostile) + "&key=" + q(xss),
				"/dead/confirm?action=" + q(xss), "/dead?since=" + q(xss), "/dead/" + q(xss),
				"/outbox?status=failed", "/outbox?status=all&topic=" + q(xss), "/outbox/show?id=ob-1", "/outbox/show?id=ob-1&view=hex",
				"/outbox/confirm?action=discard&id=ob-1", "/outbox/confirm?action=discard&topic=" + q(xss),
				"/attempts?stale=0", "/attempts?stale=0&group=" + q(xss), "/keys?group=" + q(xss) + "&key=" + q(xss),
				"/keys?group=" + q(hostile) + "&key=" + q(hostile), "/audit", "/audit?actor=" + q(hostile),
			}
			br := newBrowser(t)
			for _, p := range pages {
				br.run(t, "open "+p, chromedp.Navigate(base+p), chromedp.WaitReady(chromedp.CSS("h1")))
				st, err := chromedp.Run(br.ctx, chromedp.Evaluate[pageState](readState))
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				if st.H1 == "" || len(st.Violations) > 0 || st.Injected || st.Scripts != 1 || st.Handlers != 0 {
					t.Errorf("%s: %+v", p, st)
				}
			}
			// The hostile text was there to run, shown as text.
			br.run(t, "open the big one", chromedp.Navigate(fmt.Sprintf("%s/dead/%d", base, bigID)), chromedp.WaitReady(chromedp.CSS("#reason")))
			if s := br.text(t, "#reason"); !strings.Contains(s, xss) {
				t.Fatalf("reason shown as %q", s)
			}
			if s := br.text(t, "#group"); s != xss {
				t.Fatalf("group shown as %q", s)
			}
			if s := br.text(t, "#body"); !strings.Contains(s, xss) {
				t.Fatal("the body's text is not shown")
			}
			if s := br.text(t, "header .who"); !strings.Contains(s, xss) {
				t.Fatalf("operator shown as %q", s)
			}
			if ds := br.dialogsSeen(); len(ds) > 0 {
				t.Fatalf("dialogs opened: %q", ds)
			}
		})
	}
}
