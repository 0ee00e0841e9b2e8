package console_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/admin/console"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// bundle is one test's database, prefix, admin and console.
type bundle struct {
	ctx    context.Context
	db     *gorm.DB
	prefix string
	admin  *admin.Admin
	store  *sqldedup.Store
	sent   *sentLog
}

// sentLog is a Sender that records what it publishes, and hands it to
// deliver when set (a consumer's chain, in the browser tests).
type sentLog struct {
	mu      sync.Mutex
	msgs    []*idemq.Message
	deliver func(context.Context, *idemq.Message) error
}

func (s *sentLog) send(ctx context.Context, m *idemq.Message) error {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	deliver := s.deliver
	s.mu.Unlock()
	if deliver != nil {
		return deliver(ctx, m)
	}
	return nil
}

var quiet = slog.New(slog.DiscardHandler)

func (s *sentLog) first() *idemq.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[0]
}

func (s *sentLog) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func allTables(prefix string) []string {
	var out []string
	for _, n := range []string{"dedup", "attempts", "dead_letters", "outbox", "node_leases", "tx_records", "audit_log", "schema_migrations", "effects"} {
		out = append(out, prefix+n)
	}
	return out
}

// setup migrates every component under a fresh prefix on d.
func setup(t *testing.T, d testenv.DB) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	db := d.Open(t)
	prefix := testenv.TablePrefix(t)
	testenv.DropTables(t, db, allTables(prefix)...)
	t.Cleanup(func() { testenv.DropTables(t, db, allTables(prefix)...) })
	b := &bundle{ctx: ctx, db: db, prefix: prefix, sent: &sentLog{}}
	var err error
	b.admin, err = admin.New(db, admin.Config{TablePrefix: prefix, Sender: b.sent.send})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.Migrate(ctx, false); err != nil {
		t.Fatal(err)
	}
	b.store, err = sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bury dead-letters a message the way the DeadLetter middleware does.
func (b *bundle) bury(t testing.TB, group, topic, key, reason string, body []byte, props map[string]string) int64 {
	t.Helper()
	if _, err := b.store.RecordFailure(b.ctx, group, key, 1, errors.New(reason)); err != nil {
		t.Fatal(err)
	}
	id, err := b.store.Bury(b.ctx, &dedup.DeadLetter{
		Group: group, Key: key, MessageID: "m-" + key, Topic: topic, Tags: "t", Keys: []string{"k-" + key},
		Body: body, Properties: props, Attempts: 3, Reason: reason,
		History: []dedup.AttemptError{{Attempt: 1, At: time.Now().UTC(), Error: reason}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serve starts the console over b with cfg (Admin filled in) and returns
// its URL.
func (b *bundle) serve(t testing.TB, cfg console.Config) (*console.Handler, string) {
	t.Helper()
	cfg.Admin = b.admin
	if cfg.Auth.Kind() == "" {
		cfg.Auth = console.Unauthenticated("tester")
	}
	h, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// client is an HTTP client that keeps cookies and does not follow
// redirects.
func client(t testing.TB) *http.Client {
	return &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// get fetches u and returns its status and body.
func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
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

// postForm posts form to u as a same-origin browser form would.
func postForm(t testing.TB, c *http.Client, u string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var (
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	entities = strings.NewReplacer("&#43;", "+", "&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&quot;", `"`)
)

// confirmForm reads the hidden fields of a confirmation page's form.
func confirmForm(t testing.TB, page string) url.Values {
	t.Helper()
	form := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(page, -1) {
		form.Add(entities.Replace(m[1]), entities.Replace(m[2]))
	}
	if form.Get("token") == "" || form.Get("expect") == "" {
		t.Fatalf("no confirmation form in:\n%s", page)
	}
	return form
}

// waiting counts the dead letters waiting for a redrive.
func (b *bundle) waiting(t testing.TB) int64 {
	t.Helper()
	n, err := b.admin.CountDead(b.ctx, admin.DeadFilter{All: true})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (b *bundle) auditActions(t testing.TB) []admin.AuditRecord {
	t.Helper()
	recs, _, err := b.admin.Audit(b.ctx, admin.AuditFilter{}, admin.Page{Newest: true})
	if err != nil {
		t.Fatal(err)
	}
	// The setup's own migration is audited too; the tests look at what the
	// operator did through the console.
	out := recs[:0]
	for _, r := range recs {
		if r.Action != admin.ActionMigrate {
			out = append(out, r)
		}
	}
	return out
}
