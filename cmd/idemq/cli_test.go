package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/producer/outbox"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the idemq command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "idemq-cli-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "idemq")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// target is one database as the test opens it and as --db names it.
type target struct {
	name   string
	db     *gorm.DB
	dbFlag string
	prefix string
}

func targets(t *testing.T) []func(t *testing.T) target {
	return []func(t *testing.T) target{
		func(t *testing.T) target {
			path := filepath.Join(t.TempDir(), "app.db")
			db, err := sqlitedb.Open(path, &gorm.Config{Logger: logger.Discard})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if s, err := db.DB(); err == nil {
					s.Close()
				}
			})
			return target{name: "sqlite", db: db, dbFlag: "sqlite:" + path, prefix: testenv.TablePrefix(t)}
		},
		func(t *testing.T) target {
			return target{name: "postgres", db: testenv.OpenPostgres(t), dbFlag: "postgres:" + testenv.PostgresDSN(t), prefix: testenv.TablePrefix(t)}
		},
		func(t *testing.T) target {
			return target{name: "mysql", db: testenv.OpenMySQL(t), dbFlag: "mysql:" + testenv.MySQLDSN(t), prefix: testenv.TablePrefix(t)}
		},
	}
}

func dbNames() []string { return []string{"sqlite", "postgres", "mysql"} }

func allTables(prefix string) []string {
	var out []string
	for _, n := range []string{"dedup", "attempts", "dead_letters", "outbox", "node_leases", "tx_records", "audit_log", "schema_migrations"} {
		out = append(out, prefix+n)
	}
	return out
}

// run runs the command with stdin and returns stdout, stderr and the error.
func (tg target) run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	full := append([]string{"--db", tg.dbFlag, "--prefix", tg.prefix, "--actor", "oncall"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), full...)
	cmd.Env = append(os.Environ(), "IDEMQ_DB=", "IDEMQ_NAMESRV=")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (tg target) ok(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := tg.run(t, "", args...)
	if err != nil {
		t.Fatalf("idemq %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func (tg target) jsonOf(t *testing.T, v any, args ...string) {
	t.Helper()
	out := tg.ok(t, append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("idemq --json %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (tg target) store(t *testing.T) *sqldedup.Store {
	t.Helper()
	s, err := sqldedup.New(tg.db, sqldedup.Config{TablePrefix: tg.prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bury(t *testing.T, s *sqldedup.Store, group, topic, key, reason string) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := s.RecordFailure(ctx, group, key, 1, errors.New(reason)); err != nil {
		t.Fatal(err)
	}
	id, err := s.Bury(ctx, &dedup.DeadLetter{Group: group, Key: key, MessageID: "msg-" + key, Topic: topic,
		Body: []byte(`{"order":"` + key + `"}`), Properties: map[string]string{"origin": "test"}, Attempts: 3, Reason: reason,
		History: []dedup.AttemptError{{Attempt: 3, At: time.Now().UTC(), Error: reason}}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var rfc3339Tokyo = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00`)

// The dead-letter commands on every database: list as a table with times
// in the chosen zone and as JSON, groups, show, a discard that asks first
// (and refuses without an answer), the audit record it leaves, and redrive
// options that need no broker.
func TestCLIDeadLetters(t *testing.T) {
	for i, open := range targets(t) {
		t.Run(dbNames()[i], func(t *testing.T) {
			tg := open(t)
			testenv.DropTables(t, tg.db, allTables(tg.prefix)...)
			out := tg.ok(t, "migrate")
			if !strings.Contains(out, "applied dedup 0001_initial") || !strings.Contains(out, "applied admin 0001_initial") {
				t.Fatalf("migrate:\n%s", out)
			}
			if out := tg.ok(t, "migrate"); !strings.Contains(out, "Up to date") {
				t.Fatalf("second migrate:\n%s", out)
			}
			s := tg.store(t)
			bury(t, s, "payments", "payouts", "p-1", `payout 1001 refused: account "frozen"`)
			bury(t, s, "payments", "payouts", "p-2", `payout 1002 refused: account "closed"`)
			bury(t, s, "mail", "emails", "e-1", "smtp 550 mailbox unavailable")

			out = tg.ok(t, "--tz", "Asia/Tokyo", "dead", "list")
			for _, want := range []string{"DEAD AT", "msg-p-1", "msg-p-2", "msg-e-1", "payouts", "waiting", `account "frozen"`} {
				if !strings.Contains(out, want) {
					t.Errorf("dead list lacks %q:\n%s", want, out)
				}
			}
			if !rfc3339Tokyo.MatchString(out) {
				t.Errorf("dead list times are not RFC 3339 in +09:00:\n%s", out)
			}
			var listed struct {
				DeadLetters []struct {
					ID        int64     `json:"id"`
					MessageID string    `json:"message_id"`
					Group     string    `json:"group"`
					DeadAt    time.Time `json:"dead_at"`
				} `json:"dead_letters"`
			}
			tg.jsonOf(t, &listed, "dead", "list", "--group", "payments")
			if len(listed.DeadLetters) != 2 || listed.DeadLetters[0].MessageID != "msg-p-1" || listed.DeadLetters[0].DeadAt.IsZero() {
				t.Fatalf("dead list --json: %+v", listed)
			}
			out = tg.ok(t, "dead", "groups")
			if !strings.Contains(out, `payout # refused: account "…"`) || !strings.Contains(out, "2 ") {
				t.Errorf("dead groups:\n%s", out)
			}
			out = tg.ok(t, "dead", "show", itoa(listed.DeadLetters[0].ID))
			for _, want := range []string{"msg-p-1", `{"order":"p-1"}`, "origin = test", "Error history:", "#3"} {
				if !strings.Contains(out, want) {
					t.Errorf("dead show lacks %q:\n%s", want, out)
				}
			}
			// Redrive dry run needs no broker; a real one refuses without --namesrv.
			out = tg.ok(t, "dead", "redrive", "--group", "payments", "--dry-run")
			if !strings.Contains(out, "Dry run: 2 items would redrive") {
				t.Errorf("redrive dry run:\n%s", out)
			}
			if _, stderr, err := tg.run(t, "", "--yes", "dead", "redrive", "--all"); err == nil || !strings.Contains(stderr, "--namesrv") {
				t.Errorf("redrive without --namesrv: %v %s", err, stderr)
			}
			// Discard asks; no answer or "n" changes nothing.
			out, stderr, err := tg.run(t, "", "dead", "discard", "--error", "SMTP")
			if err == nil || !strings.Contains(out, "This will discard 1 dead letter") || !strings.Contains(stderr, "aborted") {
				t.Fatalf("discard without an answer: %v\n%s\n%s", err, out, stderr)
			}
			if _, _, err := tg.run(t, "n\n", "dead", "discard", "--error", "SMTP"); err == nil {
				t.Fatal("discard answered n succeeded")
			}
			if _, _, err := tg.run(t, "", "--yes", "dead", "discard"); err == nil {
				t.Fatal("discard without a selector succeeded")
			}
			out, stderr, err = tg.run(t, "y\n", "dead", "discard", "--error", "SMTP")
			if err != nil || !strings.Contains(out, "discard: 1 of 1 done") {
				t.Fatalf("discard: %v\n%s\n%s", err, out, stderr)
			}
			tg.jsonOf(t, &listed, "dead", "list")
			if len(listed.DeadLetters) != 2 {
				t.Fatalf("after discard: %+v", listed)
			}
			var audit struct {
				Records []struct {
					Actor  string          `json:"actor"`
					Action string          `json:"action"`
					Count  int64           `json:"count"`
					Detail json.RawMessage `json:"detail"`
				} `json:"records"`
			}
			tg.jsonOf(t, &audit, "audit", "--action", "dead.discard")
			if len(audit.Records) != 1 || audit.Records[0].Actor != "oncall" || audit.Records[0].Action != "dead.discard" ||
				audit.Records[0].Count != 1 || !strings.Contains(string(audit.Records[0].Detail), "msg-e-1") {
				t.Fatalf("audit: %+v", audit)
			}
			if out := tg.ok(t, "audit"); !strings.Contains(out, "dead.discard") || !strings.Contains(out, "oncall") {
				t.Errorf("audit table:\n%s", out)
			}
			out = tg.ok(t, "key", "show", "mail", "e-1")
			if !strings.Contains(out, ": dead") {
				t.Errorf("key show of a discarded message:\n%s", out)
			}
			out = tg.ok(t, "stats")
			if !strings.Contains(out, "payments") || !strings.Contains(out, "Outbox:") {
				t.Errorf("stats:\n%s", out)
			}
			// A failure waiting for a retry, then stale by the database clock.
			if _, err := s.RecordFailure(context.Background(), "payments", "p-retry", 1, errors.New("gateway 502")); err != nil {
				t.Fatal(err)
			}
			if out := tg.ok(t, "attempts", "--group", "payments"); !strings.Contains(out, "p-retry") || !strings.Contains(out, "retrying") {
				t.Errorf("attempts:\n%s", out)
			}
			if out := tg.ok(t, "attempts", "stale"); strings.Contains(out, "p-retry") {
				t.Errorf("attempts stale lists a fresh failure:\n%s", out)
			}
			if err := tg.db.Exec("UPDATE " + tg.prefix + "attempts SET last_at = last_at - 86400000").Error; err != nil {
				t.Fatal(err)
			}
			if out := tg.ok(t, "attempts", "stale"); !strings.Contains(out, "p-retry") || !strings.Contains(out, "gateway 502") {
				t.Errorf("attempts stale:\n%s", out)
			}
			if out := tg.ok(t, "attempts", "processing"); !strings.Contains(out, "LEASE UNTIL") {
				t.Errorf("attempts processing:\n%s", out)
			}
		})
	}
}

// Outbox commands on every database: a failed row is listed, shown,
// counted, redriven after confirmation (pending again, same message ID)
// and another one discarded, each with an audit record.
func TestCLIOutbox(t *testing.T) {
	for i, open := range targets(t) {
		t.Run(dbNames()[i], func(t *testing.T) {
			tg := open(t)
			testenv.DropTables(t, tg.db, allTables(tg.prefix)...)
			tg.ok(t, "migrate")
			ob, err := outbox.New(tg.db, outbox.Config{IDSource: fixedIDs{}, TablePrefix: tg.prefix})
			if err != nil {
				t.Fatal(err)
			}
			err = tg.db.Transaction(func(tx *gorm.DB) error {
				for _, id := range []string{"ob-1", "ob-2"} {
					if err := ob.Enqueue(tx, &idemq.Message{ID: id, Topic: "payouts", Body: []byte("pay " + id)}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(context.Context, *idemq.Message) (string, error) {
				return "", idemq.Permanent(errors.New("no route to topic"))
			}), outbox.RelayConfig{ID: "cli-test"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := relay.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			out := tg.ok(t, "outbox", "list")
			if !strings.Contains(out, "ob-1") || !strings.Contains(out, "failed") || !strings.Contains(out, "no route to topic") {
				t.Fatalf("outbox list:\n%s", out)
			}
			var stats struct {
				Failed  int64 `json:"failed"`
				Pending int64 `json:"pending"`
			}
			tg.jsonOf(t, &stats, "outbox", "stats")
			if stats.Failed != 2 || stats.Pending != 0 {
				t.Fatalf("stats: %+v", stats)
			}
			if out := tg.ok(t, "outbox", "show", "ob-1"); !strings.Contains(out, "pay ob-1") {
				t.Errorf("outbox show:\n%s", out)
			}
			out, _, err = tg.run(t, "yes\n", "outbox", "redrive", "ob-1")
			if err != nil || !strings.Contains(out, "This will redrive 1 failed outbox row") || !strings.Contains(out, "redrive: 1 of 1 done") {
				t.Fatalf("outbox redrive: %v\n%s", err, out)
			}
			out = tg.ok(t, "--yes", "outbox", "discard", "--all")
			if !strings.Contains(out, "discard: 1 of 1 done") {
				t.Fatalf("outbox discard:\n%s", out)
			}
			tg.jsonOf(t, &stats, "outbox", "stats")
			if stats.Failed != 0 || stats.Pending != 1 {
				t.Fatalf("stats after: %+v", stats)
			}
			e, err := ob.Get(context.Background(), "ob-1")
			if err != nil || e.Status != outbox.StatusPending || e.Attempts != 0 {
				t.Fatalf("redriven row: %+v, %v", e, err)
			}
			var audit struct {
				Records []struct {
					Action string `json:"action"`
				} `json:"records"`
			}
			tg.jsonOf(t, &audit, "audit")
			if len(audit.Records) != 3 || audit.Records[0].Action != "outbox.discard" || audit.Records[1].Action != "outbox.redrive" ||
				audit.Records[2].Action != "migrate" {
				t.Fatalf("audit: %+v", audit)
			}
		})
	}
}

// `idemq migrate` upgrades a database whose tables the previous release
// created (the plain schema, no migrations table), keeping its rows.
func TestCLIMigrateAdoptsPreviousSchema(t *testing.T) {
	for i, open := range targets(t) {
		t.Run(dbNames()[i], func(t *testing.T) {
			tg := open(t)
			testenv.DropTables(t, tg.db, allTables(tg.prefix)...)
			d := tg.db.Dialector.Name()
			// The previous release shipped step 0001 of the dedup tables.
			steps, err := migrate.Steps("dedup", d)
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range steps[0].Statements(tg.prefix) {
				if err := tg.db.Exec(stmt).Error; err != nil {
					t.Fatal(err)
				}
			}
			if err := tg.db.Exec("INSERT INTO "+tg.prefix+"dead_letters (consumer_group, dedup_key, message_id, topic, msg_keys, properties, reason, history, attempts, first_failed_at, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				"g", "old", "msg-old", "t", "[]", "{}", "from before", "[]", 3, 1, 2).Error; err != nil {
				t.Fatalf("old dead letter: %v", err)
			}
			out := tg.ok(t, "migrate", "--status")
			if !strings.Contains(out, "pending") {
				t.Fatalf("status before:\n%s", out)
			}
			tg.ok(t, "migrate")
			out = tg.ok(t, "migrate", "--status")
			if strings.Contains(out, "pending") {
				t.Fatalf("status after:\n%s", out)
			}
			if out := tg.ok(t, "dead", "list"); !strings.Contains(out, "msg-old") {
				t.Fatalf("old dead letter lost:\n%s", out)
			}
		})
	}
}

type fixedIDs struct{}

func (fixedIDs) NextID() (string, error) { return "", errors.New("test messages carry their IDs") }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// `idemq metrics` serves the table metrics over HTTP.
func TestCLIMetricsExporter(t *testing.T) {
	tg := targets(t)[0](t)
	tg.ok(t, "migrate")
	bury(t, tg.store(t), "payments", "payouts", "p-1", "boom")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "--db", tg.dbFlag, "--prefix", tg.prefix, "metrics", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v", err)
	}
	url := strings.TrimSpace(line[strings.Index(line, "http://"):])
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `idemq_dead_letters_waiting{group="payments",topic="payouts"} 1`) {
		t.Fatalf("GET %s: %d\n%s", url, resp.StatusCode, body)
	}
}

// `idemq dead redrive --via-outbox` needs no broker: the message goes into
// the outbox with its ID, in the redrive's transaction.
func TestCLIRedriveViaOutbox(t *testing.T) {
	for i, open := range targets(t) {
		t.Run(dbNames()[i], func(t *testing.T) {
			tg := open(t)
			testenv.DropTables(t, tg.db, allTables(tg.prefix)...)
			tg.ok(t, "migrate")
			bury(t, tg.store(t), "payments", "payouts", "p-9", "boom")
			out := tg.ok(t, "--yes", "dead", "redrive", "--via-outbox", "--all")
			if !strings.Contains(out, "redrive: 1 of 1 done") {
				t.Fatalf("redrive --via-outbox:\n%s", out)
			}
			ob, err := outbox.New(tg.db, outbox.Config{IDSource: fixedIDs{}, TablePrefix: tg.prefix})
			if err != nil {
				t.Fatal(err)
			}
			e, err := ob.Get(context.Background(), "msg-p-9")
			if err != nil || e.Status != outbox.StatusPending || e.Topic != "payouts" {
				t.Fatalf("outbox row: %+v, %v", e, err)
			}
		})
	}
}
