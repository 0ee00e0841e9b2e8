package console_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/admin/console"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/producer/outbox"
)

func sqlite() testenv.DB { return testenv.Databases()[0] }

func TestNewRequiresAuth(t *testing.T) {
	b := setup(t, sqlite())
	bad := []console.Auth{
		{},
		console.Middleware(nil, nil),
		console.Token("ops", "short"),
		console.Basic("", nil),
		console.Basic("", map[string]string{"alice": ""}),
	}
	for i, a := range bad {
		if _, err := console.New(console.Config{Admin: b.admin, Auth: a}); err == nil {
			t.Errorf("auth %d (%q): New accepted it", i, a.Kind())
		}
	}
	if _, err := console.New(console.Config{Auth: console.Unauthenticated("x")}); err == nil {
		t.Error("New accepted a Config without Admin")
	}
}

func TestSecurityHeaders(t *testing.T) {
	b := setup(t, sqlite())
	id := b.bury(t, "g", "orders", "k1", "boom", []byte("x"), nil)
	_, base := b.serve(t, console.Config{})
	c := client(t)
	for _, p := range []string{"/", "/dead", "/dead/groups", "/dead/" + strconv.FormatInt(id, 10), "/outbox", "/attempts", "/keys", "/audit",
		"/dead/confirm?action=discard&id=" + strconv.FormatInt(id, 10), "/dead/999999", "/static/style.css"} {
		resp, err := c.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP allows inline script: %q", p, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", p, h)
		}
	}
}

func TestReadOnlyRegistersNoMutation(t *testing.T) {
	b := setup(t, sqlite())
	id := b.bury(t, "g", "orders", "k1", "boom", []byte("x"), nil)
	// The same console, writable, to take a valid form token and show the
	// POST would have worked.
	_, rw := b.serve(t, console.Config{Secret: []byte("0123456789abcdef")})
	_, ro := b.serve(t, console.Config{ReadOnly: true, Secret: []byte("0123456789abcdef")})
	c := client(t)
	_, page := get(t, c, rw+"/dead/confirm?action=discard&id="+strconv.FormatInt(id, 10))
	form := confirmForm(t, page)

	for _, p := range []string{"/dead", "/dead/" + strconv.FormatInt(id, 10), "/dead/groups", "/outbox?status=failed"} {
		st, body := get(t, c, ro+p)
		if st != http.StatusOK {
			t.Fatalf("%s: %d", p, st)
		}
		if strings.Contains(body, "/confirm") || strings.Contains(body, "Discard") || strings.Contains(body, `method="post"`) {
			t.Errorf("read-only %s offers an action:\n%s", p, body)
		}
	}
	for _, p := range []string{"/dead/confirm?action=discard&id=1", "/outbox/confirm?action=discard&all=1"} {
		if st, _ := get(t, c, ro+p); st != http.StatusNotFound {
			t.Errorf("read-only GET %s: %d, want 404", p, st)
		}
	}
	for _, p := range []string{"/dead/act", "/outbox/act"} {
		if st, _ := postForm(t, c, ro+p, form); st != http.StatusNotFound && st != http.StatusMethodNotAllowed {
			t.Errorf("read-only POST %s: %d, want 404 or 405", p, st)
		}
	}
	if n := b.waiting(t); n != 1 {
		t.Fatalf("read-only console changed the dead letters: %d waiting", n)
	}
	// The chance was there: the writable console takes the same form.
	if st, body := postForm(t, c, rw+"/dead/act", form); st != http.StatusOK || b.waiting(t) != 0 {
		t.Fatalf("writable console: %d\n%s", st, body)
	}
}

func TestTokenAuth(t *testing.T) {
	b := setup(t, sqlite())
	const token = "s3cret-token-0123456789"
	_, base := b.serve(t, console.Config{Auth: console.Token("ops", token)})
	c := client(t)
	if st, _ := get(t, c, base+"/dead"); st != http.StatusSeeOther {
		t.Fatalf("unauthenticated GET: %d, want a redirect to sign in", st)
	}
	if st, _ := postForm(t, c, base+"/login", url.Values{"token": {"wrong-token-0123456789"}}); st != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", st)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "idemq_console_session" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || strings.Contains(session.Value, token) {
		t.Fatalf("session cookie: %+v", session)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/dead", nil)
	req.AddCookie(session)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed-in GET: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/audit", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if st, body := do(t, c, req); st != http.StatusOK || !strings.Contains(body, "ops") {
		t.Fatalf("bearer GET: %d", st)
	}
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestBasicAuthAndMiddlewareIdentity(t *testing.T) {
	b := setup(t, sqlite())
	id := b.bury(t, "g", "orders", "k1", "boom", []byte("x"), nil)
	_, base := b.serve(t, console.Config{Auth: console.Basic("", map[string]string{"alice": "pw-alice"})})
	c := client(t)
	if st, _ := get(t, c, base+"/dead"); st != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", st)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/dead", nil)
	req.SetBasicAuth("alice", "wrong")
	if st, _ := do(t, c, req); st != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", st)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/dead/confirm?action=discard&id="+strconv.FormatInt(id, 10), nil)
	req.SetBasicAuth("alice", "pw-alice")
	st, page := do(t, c, req)
	if st != http.StatusOK {
		t.Fatalf("alice: %d", st)
	}
	form := confirmForm(t, page)
	req, _ = http.NewRequest(http.MethodPost, base+"/dead/act", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:pw-alice")))
	if st, body := do(t, c, req); st != http.StatusOK {
		t.Fatalf("discard: %d\n%s", st, body)
	}
	recs := b.auditActions(t)
	if len(recs) != 1 || recs[0].Actor != "alice" || recs[0].Action != admin.ActionDeadDiscard || recs[0].Count != 1 {
		t.Fatalf("audit: %+v", recs)
	}

	// The service's own middleware: it rejects, and names the operator.
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-User") == "" {
				http.Error(w, "who are you", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	_, base2 := b.serve(t, console.Config{Auth: console.Middleware(mw, func(r *http.Request) string { return "sso:" + r.Header.Get("X-User") })})
	if st, _ := get(t, c, base2+"/"); st != http.StatusUnauthorized {
		t.Fatalf("middleware let an anonymous request in: %d", st)
	}
	req, _ = http.NewRequest(http.MethodGet, base2+"/", nil)
	req.Header.Set("X-User", "bob")
	if st, body := do(t, c, req); st != http.StatusOK || !strings.Contains(body, "sso:bob") {
		t.Fatalf("middleware identity: %d", st)
	}
}

// TestFormTokenRequired: a same-origin POST (which cross-origin
// protection lets through) without the operator's form token is refused.
func TestFormTokenRequired(t *testing.T) {
	b := setup(t, sqlite())
	id := b.bury(t, "g", "orders", "k1", "boom", []byte("x"), nil)
	_, base := b.serve(t, console.Config{})
	c := client(t)
	_, page := get(t, c, base+"/dead/confirm?action=discard&id="+strconv.FormatInt(id, 10))
	form := confirmForm(t, page)
	for name, tok := range map[string][]string{"missing": nil, "forged": {"AAAA"}, "empty": {""}} {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		f["token"] = tok
		if st, _ := postForm(t, c, base+"/dead/act", f); st != http.StatusForbidden {
			t.Errorf("%s token: %d, want 403", name, st)
		}
	}
	if n := b.waiting(t); n != 1 || len(b.auditActions(t)) != 0 {
		t.Fatalf("a POST without the form token acted: %d waiting", n)
	}
	if st, _ := postForm(t, c, base+"/dead/act", form); st != http.StatusOK || b.waiting(t) != 0 {
		t.Fatalf("with the token: %d", st)
	}
}

// TestCrossOriginPostRefused: a POST the browser marks as cross-site is
// refused even with a valid form token.
func TestCrossOriginPostRefused(t *testing.T) {
	b := setup(t, sqlite())
	id := b.bury(t, "g", "orders", "k1", "boom", []byte("x"), nil)
	_, base := b.serve(t, console.Config{})
	c := client(t)
	_, page := get(t, c, base+"/dead/confirm?action=discard&id="+strconv.FormatInt(id, 10))
	form := confirmForm(t, page)
	for _, hd := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}} {
		req, _ := http.NewRequest(http.MethodPost, base+"/dead/act", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hd {
			req.Header.Set(k, v)
		}
		if st, _ := do(t, c, req); st != http.StatusForbidden {
			t.Errorf("%v: %d, want 403", hd, st)
		}
	}
	if b.waiting(t) != 1 {
		t.Fatal("a cross-origin POST acted")
	}
}

// TestBulkCountChangedRefused: the count confirmed travels with the POST;
// when the filter matches another number by then, nothing is done.
func TestBulkCountChangedRefused(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			for i := range 3 {
				b.bury(t, "payments", "payouts", fmt.Sprintf("k%d", i), "wallet frozen", []byte("x"), nil)
			}
			_, base := b.serve(t, console.Config{})
			c := client(t)
			st, page := get(t, c, base+"/dead/confirm?action=redrive&group=payments")
			if st != http.StatusOK || !strings.Contains(page, "Redrive <b>3</b> items?") {
				t.Fatalf("confirm: %d\n%s", st, page)
			}
			form := confirmForm(t, page)
			b.bury(t, "payments", "payouts", "k-late", "wallet frozen", []byte("x"), nil)
			st, page = postForm(t, c, base+"/dead/act", form)
			if st != http.StatusConflict || !strings.Contains(page, "it matched 3, it now matches 4") {
				t.Fatalf("changed selection: %d\n%s", st, page)
			}
			if b.sent.count() != 0 || b.waiting(t) != 4 || len(b.auditActions(t)) != 0 {
				t.Fatalf("the refused redrive acted: sent %d, waiting %d", b.sent.count(), b.waiting(t))
			}
			form = confirmForm(t, page)
			if form.Get("expect") != "4" {
				t.Fatalf("new confirmation expects %q", form.Get("expect"))
			}
			if st, page := postForm(t, c, base+"/dead/act", form); st != http.StatusOK || !strings.Contains(page, "Redrove <b>4</b> of 4") {
				t.Fatalf("confirmed again: %d\n%s", st, page)
			}
			if b.sent.count() != 4 || b.waiting(t) != 0 {
				t.Fatalf("sent %d, waiting %d", b.sent.count(), b.waiting(t))
			}
			recs := b.auditActions(t)
			if len(recs) != 1 || recs[0].Actor != "tester" || recs[0].Count != 4 {
				t.Fatalf("audit: %+v", recs)
			}
		})
	}
}

var nextRE = regexp.MustCompile(`<a href="([^"]*)" id="next" rel="next">`)
var rowRE = regexp.MustCompile(`<input type="checkbox" name="id" value="(\d+)"`)

// TestPaginationThousands pages through thousands of dead letters and
// sees each exactly once, newest first, on every database.
func TestPaginationThousands(t *testing.T) {
	const n = 2500
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			rows := make([]map[string]any, 0, n)
			for i := range n {
				rows = append(rows, map[string]any{"consumer_group": "g", "dedup_key": fmt.Sprintf("key-%05d", i),
					"message_id": fmt.Sprintf("m-%05d", i), "topic": "orders", "tags": "", "msg_keys": "[]", "body": []byte("b"),
					"properties": "{}", "attempts": 3, "reason": fmt.Sprintf("order %d failed", i), "history": "[]",
					"first_failed_at": int64(1700000000000 + i), "dead_at": int64(1700000000000 + i)})
			}
			if err := b.db.Table(b.prefix+"dead_letters").CreateInBatches(rows, 500).Error; err != nil {
				t.Fatal(err)
			}
			_, base := b.serve(t, console.Config{PageSize: 200})
			c := client(t)
			seen := map[string]bool{}
			last := int64(1 << 62)
			u := base + "/dead"
			pages := 0
			for u != "" {
				st, page := get(t, c, u)
				if st != http.StatusOK {
					t.Fatalf("%s: %d", u, st)
				}
				if pages == 0 && !strings.Contains(page, "<b>2500</b> dead letters match") {
					t.Fatal("first page does not show the total")
				}
				ms := rowRE.FindAllStringSubmatch(page, -1)
				if len(ms) == 0 || len(ms) > 200 {
					t.Fatalf("page %d has %d rows", pages, len(ms))
				}
				for _, m := range ms {
					id, _ := strconv.ParseInt(m[1], 10, 64)
					if seen[m[1]] || id >= last {
						t.Fatalf("page %d: id %d repeated or out of order", pages, id)
					}
					seen[m[1]], last = true, id
				}
				pages++
				u = ""
				if m := nextRE.FindStringSubmatch(page); m != nil {
					u = base + entities.Replace(m[1])
				}
			}
			if len(seen) != n || pages != n/200+1 {
				t.Fatalf("saw %d dead letters in %d pages, want %d in %d", len(seen), pages, n, n/200+1)
			}
			st, page := get(t, c, base+"/dead/groups")
			if st != http.StatusOK || !strings.Contains(page, "<b>2500</b> in <b>1</b> group") {
				t.Fatalf("groups: %d", st)
			}
		})
	}
}

// TestOverviewMetrics: with the service's registry, the overview shows
// each group's duplicates skipped and the Redis fast path's fallbacks.
func TestOverviewMetrics(t *testing.T) {
	b := setup(t, sqlite())
	reg := prometheus.NewRegistry()
	chain, err := middleware.Standard(middleware.StandardConfig{Store: b.store, Ledger: b.store, Logger: quiet, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h, err := idemq.Chain(idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }), chain...)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		m := &idemq.Message{ID: "m-1", Group: "payments", Topic: "payouts", Attempt: 1}
		if err := h.Handle(b.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	fallbacks := prometheus.NewCounter(prometheus.CounterOpts{Name: "idemq_redis_fastpath_fallbacks_total", Help: "test"})
	reg.MustRegister(fallbacks)
	fallbacks.Add(7)

	_, withReg := b.serve(t, console.Config{Gatherer: reg})
	_, plain := b.serve(t, console.Config{})
	st, page := get(t, client(t), withReg+"/")
	if st != http.StatusOK || !strings.Contains(page, `<td class="n dup">2</td>`) || !strings.Contains(page, `<b>7</b> fallbacks`) {
		t.Fatalf("overview with the registry: %d\n%s", st, page)
	}
	if _, page := get(t, client(t), plain+"/"); strings.Contains(page, "Duplicates skipped</th>") || strings.Contains(page, "fallbacks") {
		t.Fatalf("overview without a registry shows metrics:\n%s", page)
	}
}

// TestOutboxRedriveAndDiscard: failed outbox rows are redriven and
// discarded from the console, confirmed by count, on every database.
func TestOutboxRedriveAndDiscard(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			ids := &seqOutboxIDs{}
			ob, err := outbox.New(b.db, outbox.Config{IDSource: ids, TablePrefix: b.prefix, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(context.Context, *idemq.Message) (string, error) {
				return "", idemq.Permanent(errors.New("no route"))
			}), outbox.RelayConfig{ID: "broken"})
			if err != nil {
				t.Fatal(err)
			}
			fail := func(n int) {
				for range n {
					if err := b.db.Transaction(func(tx *gorm.DB) error {
						return ob.Enqueue(tx, &idemq.Message{Topic: "payouts", Body: []byte("x")})
					}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := relay.RunOnce(b.ctx); err != nil {
					t.Fatal(err)
				}
			}
			fail(3)
			_, base := b.serve(t, console.Config{})
			c := client(t)
			st, page := get(t, c, base+"/outbox?status=failed")
			first := regexp.MustCompile(`name="id" value="([^"]+)"`).FindStringSubmatch(page)
			if st != http.StatusOK || first == nil || strings.Count(page, `name="id" value=`) != 3 {
				t.Fatalf("failed rows: %d\n%s", st, page)
			}
			_, page = get(t, c, base+"/outbox/confirm?action=redrive&id="+url.QueryEscape(first[1]))
			if st, page := postForm(t, c, base+"/outbox/act", confirmForm(t, page)); st != http.StatusOK || !strings.Contains(page, "Redrove <b>1</b> of 1") {
				t.Fatalf("redrive: %d\n%s", st, page)
			}
			e, err := b.admin.OutboxEntry(b.ctx, first[1])
			if err != nil || e.Status != "pending" {
				t.Fatalf("redriven row: %+v %v", e, err)
			}
			_, page = get(t, c, base+"/outbox/confirm?action=discard&all=1")
			form := confirmForm(t, page)
			if form.Get("expect") != "2" {
				t.Fatalf("discard all expects %q", form.Get("expect"))
			}
			fail(1) // the redriven row fails again, and one more
			if st, page := postForm(t, c, base+"/outbox/act", form); st != http.StatusConflict || !strings.Contains(page, "it matched 2, it now matches 4") {
				t.Fatalf("changed selection: %d\n%s", st, page)
			}
			if n, _ := b.admin.CountOutbox(b.ctx, admin.OutboxSelector{All: true}); n != 4 {
				t.Fatalf("the refused discard acted: %d failed", n)
			}
			_, page = get(t, c, base+"/outbox/confirm?action=discard&all=1")
			if st, page := postForm(t, c, base+"/outbox/act", confirmForm(t, page)); st != http.StatusOK || !strings.Contains(page, "Discarded <b>4</b> of 4") {
				t.Fatalf("discard: %d\n%s", st, page)
			}
			recs := b.auditActions(t)
			if len(recs) != 2 || recs[0].Action != admin.ActionOutboxDiscard || recs[1].Action != admin.ActionOutboxRedrive || recs[0].Actor != "tester" {
				t.Fatalf("audit: %+v", recs)
			}
		})
	}
}

// TestMountedUnderBasePath: mounted under /ops/idemq, every link, form and
// asset points under it, and a redrive works there.
func TestMountedUnderBasePath(t *testing.T) {
	b := setup(t, sqlite())
	id := b.bury(t, "g", "orders", "k1", "boom", []byte("x"), nil)
	h, err := console.New(console.Config{Admin: b.admin, Auth: console.Unauthenticated("tester"), BasePath: "/ops/idemq/"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/idemq/", http.StripPrefix("/ops/idemq", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := client(t)
	for _, p := range []string{"/", "/dead", fmt.Sprintf("/dead/%d", id), fmt.Sprintf("/dead/confirm?action=redrive&id=%d", id), "/audit"} {
		st, page := get(t, c, srv.URL+"/ops/idemq"+p)
		if st != http.StatusOK {
			t.Fatalf("%s: %d", p, st)
		}
		for _, m := range regexp.MustCompile(`(?:href|src|action)="([^"]*)"`).FindAllStringSubmatch(page, -1) {
			if !strings.HasPrefix(m[1], "/ops/idemq/") {
				t.Errorf("%s links outside the mount: %q", p, m[1])
			}
		}
	}
	if st, _ := get(t, c, srv.URL+"/ops/idemq/static/console.js"); st != http.StatusOK {
		t.Fatalf("script: %d", st)
	}
	_, page := get(t, c, fmt.Sprintf("%s/ops/idemq/dead/confirm?action=redrive&id=%d", srv.URL, id))
	if st, body := postForm(t, c, srv.URL+"/ops/idemq/dead/act", confirmForm(t, page)); st != http.StatusOK || b.sent.count() != 1 {
		t.Fatalf("redrive under the mount: %d\n%s", st, body)
	}
}
