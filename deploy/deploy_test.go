package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/middleware"
	"github.com/idemq/idemq/producer/outbox"
)

const (
	rulesFile = "prometheus/idemq-alerts.yml"
	testsFile = "prometheus/idemq-alerts.test.yml"
	dashboard = "grafana/idemq-dashboard.json"
)

// promtool finds promtool: $IDEMQ_PROMTOOL (scripts/test sets it), then
// PATH. Without it the test skips, or fails under CI=true.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("IDEMQ_PROMTOOL"); p != "" {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if testenv.InCI() {
		t.Fatal("promtool not found (CI=true): scripts/test extracts it from Debian's prometheus package and sets IDEMQ_PROMTOOL")
	}
	t.Skip("promtool not found: set IDEMQ_PROMTOOL or run scripts/test, which provides it")
	return ""
}

func TestAlertRulesCheck(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestAlertRulesUnitTests(t *testing.T) {
	cmd := exec.Command(promtool(t), "test", "rules", filepath.Base(testsFile))
	cmd.Dir = filepath.Dir(testsFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// recorder is a Registerer that keeps what is registered, to list the
// names of every metric idemq exports.
type recorder struct{ cs []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return false }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// exported lists the names of every metric idemq's packages export with
// their default names.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	rec := &recorder{}
	if _, err := middleware.Metrics(rec, middleware.MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	db := testenv.OpenSQLite(t)
	store, err := sqldedup.New(db, sqldedup.Config{})
	if err != nil {
		t.Fatal(err)
	}
	janitor, err := sqldedup.NewJanitor(store, sqldedup.JanitorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := janitor.RegisterMetrics(rec, sqldedup.JanitorMetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	fp, err := redisdedup.NewFastPath(store, redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), redisdedup.FastPathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fp.RegisterMetrics(rec, redisdedup.MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(db, outbox.Config{IDSource: admin.NoIDs{}})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(context.Context, *idemq.Message) (string, error) { return "", nil }), outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.RegisterMetrics(rec, outbox.MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	adm, err := admin.New(db, admin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec.cs = append(rec.cs, adm.Collector(admin.CollectorConfig{}))
	names := map[string]bool{}
	for _, c := range rec.cs {
		ch := make(chan *prometheus.Desc, 100)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
		}
	}
	return names
}

// Every metric idemq exports, with a sample of each, passes `promtool check
// metrics` (Prometheus's naming and help lint).
func TestPromtoolCheckMetrics(t *testing.T) {
	tool := promtool(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	mw, err := middleware.Metrics(reg, middleware.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }))
	if err := h.Handle(ctx, &idemq.Message{ID: "1", Group: "g", Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	db := testenv.OpenSQLite(t)
	adm, err := admin.New(db, admin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Migrate(ctx, false); err != nil {
		t.Fatal(err)
	}
	store, err := sqldedup.New(db, sqldedup.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.RecordFailure(ctx, "g", "k", 1, errors.New("x")); err != nil {
		t.Fatal(err)
	}
	fp, err := redisdedup.NewFastPath(store, redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), redisdedup.FastPathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fp.RegisterMetrics(reg, redisdedup.MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(db, outbox.Config{IDSource: admin.NoIDs{}})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(context.Context, *idemq.Message) (string, error) { return "", nil }), outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.RegisterMetrics(reg, outbox.MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(adm.Collector(admin.CollectorConfig{}))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(text, "idemq_attempts_retrying") || !strings.Contains(text, "idemq_consumer_in_flight") {
		t.Fatalf("scrape: %d\n%s", rec.Code, text)
	}
	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

var metricRef = regexp.MustCompile(`\bidemq_[a-z0-9_]+`)

// referenced returns the idemq metric names text mentions, without the
// histogram series suffixes.
func referenced(text string) []string {
	seen := map[string]bool{}
	for _, m := range metricRef.FindAllString(text, -1) {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, "_seconds"+suf) {
				m = strings.TrimSuffix(m, suf)
			}
		}
		seen[m] = true
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every metric the rules and the dashboard read exists: a renamed metric
// cannot leave an alert that never fires.
func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	names := exported(t)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(read(t, dashboard)), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for file, text := range map[string]string{rulesFile: read(t, rulesFile), dashboard: strings.Join(exprs, "\n")} {
		refs := referenced(text)
		if len(refs) == 0 {
			t.Fatalf("%s references no metric", file)
		}
		for _, m := range refs {
			if !names[m] {
				t.Errorf("%s reads %s, which idemq does not export", file, m)
			}
		}
	}
}

var alertName = regexp.MustCompile(`(?m)^\s*- alert: (\S+)`)
var runbook = regexp.MustCompile(`runbook_url: "docs/operations.md#([a-z0-9-]+)"`)

// docs/metrics.md lists every exported metric and every alert, and every
// alert's runbook link names a section of docs/operations.md.
func TestDocsCoverMetricsAndAlerts(t *testing.T) {
	metricsDoc := read(t, "../docs/metrics.md")
	ops := read(t, "../docs/operations.md")
	for m := range exported(t) {
		if !strings.Contains(metricsDoc, "`"+m+"`") {
			t.Errorf("docs/metrics.md does not list `%s`", m)
		}
	}
	rules := read(t, rulesFile)
	for _, m := range alertName.FindAllStringSubmatch(rules, -1) {
		if !strings.Contains(metricsDoc, "`"+m[1]+"`") {
			t.Errorf("docs/metrics.md does not list alert `%s`", m[1])
		}
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(ops, "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[slug(strings.TrimLeft(line, "# "))] = true
		}
	}
	for _, m := range runbook.FindAllStringSubmatch(rules, -1) {
		if !anchors[m[1]] {
			t.Errorf("runbook_url #%s names no heading of docs/operations.md", m[1])
		}
	}
}

// slug is the anchor GitHub-style renderers give a heading.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}
