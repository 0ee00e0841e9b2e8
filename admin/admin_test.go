package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/producer/outbox"
)

func TestDeadLetterListing(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			id1 := b.bury(t, "g1", "orders", "k1", `charge order 1001: payment API "timeout" after 30s`)
			b.bury(t, "g1", "orders", "k2", `charge order 1002: payment API "gateway 502" after 31s`)
			b.bury(t, "g2", "coupons", "k3", "coupon 77 expired")
			id4 := b.bury(t, "g2", "orders", "k4", "50% off_code rejected")

			all, next, err := b.admin.ListDead(b.ctx, admin.DeadFilter{}, admin.Page{})
			if err != nil || len(all) != 4 || next != 0 {
				t.Fatalf("list all = %d items, next %d, %v", len(all), next, err)
			}
			if all[0].ID != id1 || all[0].BodySize != int64(len("body of k1")) || all[0].Body != nil || all[0].MessageID != "m-k1" {
				t.Fatalf("first = %+v", all[0])
			}
			// Paging, oldest first and newest first.
			p1, next, err := b.admin.ListDead(b.ctx, admin.DeadFilter{}, admin.Page{Limit: 3})
			if err != nil || len(p1) != 3 || next != p1[2].ID {
				t.Fatalf("page 1 = %d, next %d, %v", len(p1), next, err)
			}
			p2, next, err := b.admin.ListDead(b.ctx, admin.DeadFilter{}, admin.Page{Limit: 3, Cursor: next})
			if err != nil || len(p2) != 1 || next != 0 || p2[0].ID != id4 {
				t.Fatalf("page 2 = %+v, next %d, %v", p2, next, err)
			}
			newest, _, err := b.admin.ListDead(b.ctx, admin.DeadFilter{}, admin.Page{Limit: 1, Newest: true})
			if err != nil || len(newest) != 1 || newest[0].ID != id4 {
				t.Fatalf("newest = %+v, %v", newest, err)
			}
			for _, c := range []struct {
				name string
				f    admin.DeadFilter
				want int64
			}{
				{"group", admin.DeadFilter{Group: "g1"}, 2},
				{"topic", admin.DeadFilter{Topic: "orders"}, 3},
				{"group and topic", admin.DeadFilter{Group: "g2", Topic: "orders"}, 1},
				{"error ignoring case", admin.DeadFilter{Error: "PAYMENT api"}, 2},
				{"error with LIKE characters", admin.DeadFilter{Error: "50% off_"}, 1},
				{"percent alone matches literally", admin.DeadFilter{Error: "%"}, 1},
				{"message ID", admin.DeadFilter{MessageID: "m-k3"}, 1},
				{"key", admin.DeadFilter{Key: "k2"}, 1},
				{"ids", admin.DeadFilter{IDs: []int64{id1, id4}}, 2},
				{"since the future", admin.DeadFilter{Since: time.Now().Add(time.Hour)}, 0},
				{"until the future", admin.DeadFilter{Until: time.Now().Add(time.Hour)}, 4},
				{"signature", admin.DeadFilter{Signature: admin.Signature(`charge order 5: payment API "x" after 1s`)}, 2},
				{"redriven", admin.DeadFilter{State: admin.DeadRedriven}, 0},
			} {
				n, err := b.admin.CountDead(b.ctx, c.f)
				if err != nil || n != c.want {
					t.Errorf("%s: count = %d, %v; want %d", c.name, n, err, c.want)
				}
				items, _, err := b.admin.ListDead(b.ctx, c.f, admin.Page{})
				if err != nil || int64(len(items)) != c.want {
					t.Errorf("%s: list = %d, %v; want %d", c.name, len(items), err, c.want)
				}
			}
			groups, err := b.admin.DeadGroups(b.ctx, admin.DeadFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(groups) != 3 || groups[0].Count != 2 || groups[0].Signature != `charge order #: payment API "…" after #s` ||
				strings.Join(groups[0].Groups, ",") != "g1" || strings.Join(groups[0].Topics, ",") != "orders" {
				t.Fatalf("groups = %+v", groups)
			}
			full, err := b.admin.DeadLetter(b.ctx, id1)
			if err != nil {
				t.Fatal(err)
			}
			if string(full.Body) != "body of k1" || full.Properties["p"] != "k1" || len(full.History) != 1 ||
				full.History[0].Error == "" || strings.Join(full.Keys, ",") != "k-k1" || full.Attempts != 3 {
				t.Fatalf("full = %+v", full)
			}
			if _, err := b.admin.DeadLetter(b.ctx, 999999); !errors.Is(err, admin.ErrNotFound) {
				t.Fatalf("missing: %v", err)
			}
		})
	}
}

func TestRedriveDead(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			id1 := b.bury(t, "g", "orders", "k1", "boom")
			id2 := b.bury(t, "g", "orders", "k2", "boom")
			b.bury(t, "g", "other", "k3", "boom")
			ctx := admin.WithActor(b.ctx, "alice")

			if _, err := b.admin.RedriveDead(ctx, admin.DeadFilter{}, admin.ActionConfig{}); !errors.Is(err, admin.ErrEmptyFilter) {
				t.Fatalf("empty filter: %v", err)
			}
			dry, err := b.admin.RedriveDead(ctx, admin.DeadFilter{Topic: "orders"}, admin.ActionConfig{DryRun: true})
			if err != nil || dry.Matched != 2 || dry.Done != 0 || len(b.sent.all()) != 0 || dry.AuditID != 0 {
				t.Fatalf("dry run = %+v, %v, sent %d", dry, err, len(b.sent.all()))
			}
			// A failing publish leaves the dead letter waiting.
			b.sent.fail = errors.New("broker down")
			res, err := b.admin.RedriveDead(ctx, admin.DeadFilter{IDs: []int64{id1}}, admin.ActionConfig{})
			if err != nil || res.Done != 0 || len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Error, "broker down") {
				t.Fatalf("failing redrive = %+v, %v", res, err)
			}
			if n, _ := b.admin.CountDead(b.ctx, admin.DeadFilter{IDs: []int64{id1}}); n != 1 {
				t.Fatalf("after a failed publish the dead letter must still wait; count = %d", n)
			}
			b.sent.fail = nil
			if st, _ := b.admin.Key(b.ctx, "g", "k1"); st.Status != admin.KeyDead {
				t.Fatalf("key before redrive = %s, want dead", st.Status)
			}
			res, err = b.admin.RedriveDead(ctx, admin.DeadFilter{Topic: "orders"}, admin.ActionConfig{})
			if err != nil || res.Matched != 2 || res.Done != 2 || res.AuditID == 0 {
				t.Fatalf("redrive = %+v, %v", res, err)
			}
			sent := b.sent.all()
			if len(sent) != 2 || sent[0].ID != "m-k1" || sent[0].Property(idemq.PropertyMessageID) != "m-k1" ||
				string(sent[0].Body) != "body of k1" || sent[1].ID != "m-k2" {
				t.Fatalf("sent = %+v", sent)
			}
			// The key is clear: the consumer's dedup lets the message through.
			st, err := b.admin.Key(b.ctx, "g", "k1")
			if err != nil || st.Status != admin.KeyNew || st.Attempts != nil || len(st.DeadLetters) != 1 || st.DeadLetters[0].RedrivenAt == nil {
				t.Fatalf("key after redrive = %+v, %v", st, err)
			}
			ran := false
			r, err := b.store.Process(b.ctx, dedup.Request{Group: "g", Key: "k1"}, func(ctx context.Context) error { ran = true; return nil })
			if err != nil || r.Outcome != dedup.Processed || !ran {
				t.Fatalf("process after redrive = %+v, %v", r, err)
			}
			// Redriving again finds nothing waiting; by ID it is skipped.
			again, err := b.admin.RedriveDead(ctx, admin.DeadFilter{IDs: []int64{id2}}, admin.ActionConfig{})
			if err != nil || again.Matched != 0 || len(b.sent.all()) != 2 {
				t.Fatalf("second redrive = %+v, %v", again, err)
			}
			recs, _, err := b.admin.Audit(b.ctx, admin.AuditFilter{Action: admin.ActionDeadRedrive}, admin.Page{})
			if err != nil || len(recs) != 3 {
				t.Fatalf("audit = %+v, %v", recs, err)
			}
			if recs[1].Actor != "alice" || recs[1].Count != 2 || recs[1].Target != `topic="orders"` ||
				!strings.Contains(string(recs[1].Detail), `"m-k2"`) || recs[1].At.IsZero() {
				t.Fatalf("audit record = %+v", recs[1])
			}
		})
	}
}

func TestRedriveNeedsSender(t *testing.T) {
	b := setup(t, testenv.Databases()[0])
	b.bury(t, "g", "orders", "k1", "boom")
	a, err := admin.New(b.db, admin.Config{TablePrefix: b.prefix})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := a.RedriveDead(b.ctx, admin.DeadFilter{All: true}, admin.ActionConfig{DryRun: true}); err != nil || res.Matched != 1 {
		t.Fatalf("dry run without sender = %+v, %v", res, err)
	}
	if _, err := a.RedriveDead(b.ctx, admin.DeadFilter{All: true}, admin.ActionConfig{}); !errors.Is(err, admin.ErrNoSender) {
		t.Fatalf("without sender: %v", err)
	}
}

func TestDiscardDead(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			b.bury(t, "g", "orders", "k1", "poison pill")
			b.bury(t, "g", "orders", "k2", "poison pill")
			keep := b.bury(t, "g", "orders", "k3", "other")
			ctx := admin.WithActor(b.ctx, "bob")
			if _, err := b.admin.DiscardDead(ctx, admin.DeadFilter{}, admin.ActionConfig{}); !errors.Is(err, admin.ErrEmptyFilter) {
				t.Fatalf("empty filter: %v", err)
			}
			dry, err := b.admin.DiscardDead(ctx, admin.DeadFilter{Error: "poison"}, admin.ActionConfig{DryRun: true})
			if err != nil || dry.Matched != 2 || dry.Done != 0 {
				t.Fatalf("dry = %+v, %v", dry, err)
			}
			res, err := b.admin.DiscardDead(ctx, admin.DeadFilter{Error: "poison"}, admin.ActionConfig{})
			if err != nil || res.Done != 2 || res.AuditID == 0 {
				t.Fatalf("discard = %+v, %v", res, err)
			}
			left, _, err := b.admin.ListDead(b.ctx, admin.DeadFilter{State: admin.DeadAny}, admin.Page{})
			if err != nil || len(left) != 1 || left[0].ID != keep {
				t.Fatalf("left = %+v, %v", left, err)
			}
			// The key stays dead: a late redelivery is still skipped.
			st, err := b.admin.Key(b.ctx, "g", "k1")
			if err != nil || st.Status != admin.KeyDead {
				t.Fatalf("key = %+v, %v", st, err)
			}
			r, err := b.store.Process(b.ctx, dedup.Request{Group: "g", Key: "k1"}, func(ctx context.Context) error { t.Error("ran a discarded message"); return nil })
			if err != nil || r.Outcome != dedup.Duplicate || !r.Dead {
				t.Fatalf("redelivery = %+v, %v", r, err)
			}
			recs, _, err := b.admin.Audit(b.ctx, admin.AuditFilter{Actor: "bob"}, admin.Page{})
			if err != nil || len(recs) != 1 || recs[0].Action != admin.ActionDeadDiscard || recs[0].Count != 2 {
				t.Fatalf("audit = %+v, %v", recs, err)
			}
			var detail struct {
				Discarded []struct {
					MessageID string `json:"message_id"`
					Reason    string `json:"reason"`
				} `json:"discarded"`
			}
			if err := json.Unmarshal(recs[0].Detail, &detail); err != nil || len(detail.Discarded) != 2 ||
				detail.Discarded[0].MessageID != "m-k1" || detail.Discarded[0].Reason != "poison pill" {
				t.Fatalf("detail = %s (%v)", recs[0].Detail, err)
			}
		})
	}
}

func TestKeyStates(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			st, err := b.admin.Key(b.ctx, "g", "fresh")
			if err != nil || st.Status != admin.KeyNew {
				t.Fatalf("new key = %+v, %v", st, err)
			}
			if _, err := b.store.Process(b.ctx, dedup.Request{Group: "g", Key: "done", MessageID: "m1"}, func(context.Context) error { return nil }); err != nil {
				t.Fatal(err)
			}
			st, err = b.admin.Key(b.ctx, "g", "done")
			if err != nil || st.Status != admin.KeyDone || st.MessageID != "m1" || st.CreatedAt == nil {
				t.Fatalf("done key = %+v, %v", st, err)
			}
			lease, err := sqldedup.New(b.db, sqldedup.Config{TablePrefix: b.prefix, Mode: sqldedup.Lease, LeaseDuration: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			_, err = lease.Process(b.ctx, dedup.Request{Group: "g", Key: "busy", MessageID: "m2"}, func(context.Context) error {
				st, err := b.admin.Key(b.ctx, "g", "busy")
				if err != nil || st.Status != admin.KeyProcessing || st.Owner == "" || st.Fence < 1 || st.LeaseUntil == nil || st.LeaseExpired ||
					st.LeaseUntil.Before(time.Now().Add(30*time.Second)) {
					t.Errorf("processing key = %+v, %v", st, err)
				}
				ls, err := b.admin.Processing(b.ctx, "g", 10)
				if err != nil || len(ls) != 1 || ls[0].Key != "busy" || ls[0].Expired {
					t.Errorf("processing = %+v, %v", ls, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			b.bury(t, "g", "orders", "gone", "boom")
			st, err = b.admin.Key(b.ctx, "g", "gone")
			if err != nil || st.Status != admin.KeyDead || len(st.DeadLetters) != 1 {
				t.Fatalf("dead key = %+v, %v", st, err)
			}
			if _, err := b.admin.Key(b.ctx, "", "x"); err == nil {
				t.Fatal("empty group accepted")
			}
		})
	}
}

func TestAttemptsAndStale(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			for _, k := range []string{"a", "b"} {
				if _, err := b.store.RecordFailure(b.ctx, "g", k, 1, errors.New("flaky "+k)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.store.RecordFailure(b.ctx, "h", "c", 2, errors.New("flaky c")); err != nil {
				t.Fatal(err)
			}
			at, err := b.admin.Attempts(b.ctx, admin.AttemptFilter{Group: "g"})
			if err != nil || len(at) != 2 || at[0].LastError != "flaky a" || at[0].Count != 1 || at[0].Stale || len(at[0].History) != 1 {
				t.Fatalf("attempts = %+v, %v", at, err)
			}
			st, err := b.admin.Attempts(b.ctx, admin.AttemptFilter{StaleOnly: true})
			if err != nil || len(st) != 0 {
				t.Fatalf("stale with the default threshold = %+v, %v", st, err)
			}
			// Age the records by the database's own clock: set last_at an
			// hour back, as if the broker had stopped redelivering.
			if err := b.db.Exec("UPDATE " + b.prefix + "attempts SET last_at = last_at - 3600000 WHERE consumer_group = 'g' AND dedup_key = 'a'").Error; err != nil {
				t.Fatal(err)
			}
			st, err = b.admin.Attempts(b.ctx, admin.AttemptFilter{StaleOnly: true, StaleAfter: 30 * time.Minute})
			if err != nil || len(st) != 1 || st[0].Key != "a" || !st[0].Stale {
				t.Fatalf("stale = %+v, %v", st, err)
			}
			page, err := b.admin.Attempts(b.ctx, admin.AttemptFilter{Limit: 1, Offset: 1})
			if err != nil || len(page) != 1 {
				t.Fatalf("paged = %+v, %v", page, err)
			}
			a2, err := admin.New(b.db, admin.Config{TablePrefix: b.prefix, StaleAfter: 30 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			b.bury(t, "h", "orders", "d", "boom")
			ov, err := a2.Overview(b.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ov.Groups) != 2 || ov.Groups[0].Group != "g" || ov.Groups[0].Retrying != 2 || ov.Groups[0].Stale != 1 ||
				ov.Groups[1].DeadLetters != 1 || ov.Groups[1].Dead != 1 || ov.Outbox == nil {
				t.Fatalf("overview = %+v", ov)
			}
		})
	}
}

func failAll(b *bundle, t *testing.T, ob *outbox.Outbox) {
	t.Helper()
	relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(ctx context.Context, m *idemq.Message) (string, error) {
		if strings.HasPrefix(string(m.Body), "bad") {
			return "", idemq.Permanent(errors.New("topic not allowed"))
		}
		return "broker-id", nil
	}), outbox.RelayConfig{ID: "test-relay"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.RunOnce(b.ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOutboxAdmin(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			ob := b.newOutbox(t)
			var ids []string
			err := b.db.Transaction(func(tx *gorm.DB) error {
				for _, body := range []string{"bad 1", "bad 2", "good", "bad 3"} {
					m := &idemq.Message{Topic: "t1", Body: []byte(body)}
					if body == "bad 3" {
						m.Topic = "t2"
					}
					if err := ob.Enqueue(tx, m); err != nil {
						return err
					}
					ids = append(ids, m.ID)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			st, err := b.admin.OutboxStats(b.ctx)
			if err != nil || st.Pending != 4 {
				t.Fatalf("stats before = %+v, %v", st, err)
			}
			failAll(b, t, ob)
			st, err = b.admin.OutboxStats(b.ctx)
			if err != nil || st.Pending != 0 || st.Failed != 3 || st.Sent != 1 {
				t.Fatalf("stats = %+v, %v", st, err)
			}
			failed, _, err := b.admin.ListOutbox(b.ctx, admin.OutboxFilter{Statuses: []string{"failed"}}, admin.Page{})
			if err != nil || len(failed) != 3 || failed[0].Status != "failed" || !strings.Contains(failed[0].LastError, "topic not allowed") {
				t.Fatalf("failed = %+v, %v", failed, err)
			}
			e, err := b.admin.OutboxEntry(b.ctx, ids[0])
			if err != nil || string(e.Body) != "bad 1" || e.Properties[idemq.PropertyMessageID] != ids[0] {
				t.Fatalf("entry = %+v, %v", e, err)
			}
			if _, err := b.admin.OutboxEntry(b.ctx, "nope"); !errors.Is(err, admin.ErrNotFound) {
				t.Fatalf("missing entry: %v", err)
			}
			if _, err := b.admin.RedriveOutbox(b.ctx, admin.OutboxSelector{}, admin.ActionConfig{}); !errors.Is(err, admin.ErrEmptyFilter) {
				t.Fatalf("empty selector: %v", err)
			}
			if n, err := b.admin.CountOutbox(b.ctx, admin.OutboxSelector{Topic: "t1"}); err != nil || n != 2 {
				t.Fatalf("count t1 = %d, %v", n, err)
			}
			ctx := admin.WithActor(b.ctx, "carol")
			dry, err := b.admin.RedriveOutbox(ctx, admin.OutboxSelector{Topic: "t1"}, admin.ActionConfig{DryRun: true})
			if err != nil || dry.Matched != 2 || dry.Done != 0 {
				t.Fatalf("dry = %+v, %v", dry, err)
			}
			res, err := b.admin.RedriveOutbox(ctx, admin.OutboxSelector{Topic: "t1"}, admin.ActionConfig{})
			if err != nil || res.Done != 2 || res.AuditID == 0 {
				t.Fatalf("redrive = %+v, %v", res, err)
			}
			st, _ = b.admin.OutboxStats(b.ctx)
			if st.Pending != 2 || st.Failed != 1 {
				t.Fatalf("stats after redrive = %+v", st)
			}
			e, _ = b.admin.OutboxEntry(b.ctx, ids[0])
			if e.Status != "pending" || e.Attempts != 0 || e.MessageID != ids[0] {
				t.Fatalf("redriven entry = %+v", e)
			}
			res, err = b.admin.DiscardOutbox(ctx, admin.OutboxSelector{MessageIDs: []string{ids[3], ids[0]}}, admin.ActionConfig{})
			if err != nil || res.Matched != 1 || res.Done != 1 {
				t.Fatalf("discard (one failed, one pending) = %+v, %v", res, err)
			}
			st, _ = b.admin.OutboxStats(b.ctx)
			if st.Pending != 2 || st.Failed != 0 {
				t.Fatalf("stats after discard = %+v", st)
			}
			recs, _, err := b.admin.Audit(b.ctx, admin.AuditFilter{Actor: "carol"}, admin.Page{Newest: true})
			if err != nil || len(recs) != 2 || recs[0].Action != admin.ActionOutboxDiscard || !strings.Contains(string(recs[0].Detail), ids[3]) ||
				recs[1].Action != admin.ActionOutboxRedrive || recs[1].Count != 2 {
				t.Fatalf("audit = %+v, %v", recs, err)
			}
		})
	}
}

func TestAuditPaging(t *testing.T) {
	b := setup(t, testenv.Databases()[0])
	for i := 0; i < 5; i++ {
		b.bury(t, "g", "orders", "k"+string(rune('a'+i)), "boom")
		if _, err := b.admin.DiscardDead(admin.WithActor(b.ctx, "op"), admin.DeadFilter{Key: "k" + string(rune('a'+i))}, admin.ActionConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	var seen []int64
	p := admin.Page{Limit: 2, Newest: true}
	for {
		recs, next, err := b.admin.Audit(b.ctx, admin.AuditFilter{Action: admin.ActionDeadDiscard}, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			seen = append(seen, r.ID)
		}
		if next == 0 {
			break
		}
		p.Cursor = next
	}
	if len(seen) != 5 || seen[0] < seen[4] {
		t.Fatalf("paged audit ids = %v", seen)
	}
	if recs, _, err := b.admin.Audit(b.ctx, admin.AuditFilter{Since: time.Now().Add(time.Hour)}, admin.Page{}); err != nil || len(recs) != 0 {
		t.Fatalf("future = %v, %v", recs, err)
	}
}

// A database whose tables were made by the unversioned Migrate of the
// previous release (the plain schema, no migrations table) is adopted:
// Migrate records every step, keeps the data and changes nothing else.
func TestMigrateAdoptsPreviousSchema(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			testenv.DropTables(t, db, allTables(prefix)...)
			// The previous release shipped step 0001 of each component.
			steps, err := migrate.Steps("dedup", d.Dialect)
			if err != nil {
				t.Fatal(err)
			}
			schema := strings.ReplaceAll(steps[0].SQL, "{{prefix}}", prefix)
			obSchema, err := outbox.Schema(d.Dialect, prefix)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{schema, obSchema} {
				for _, stmt := range splitSQL(s) {
					if err := db.Exec(stmt).Error; err != nil {
						t.Fatal(err)
					}
				}
			}
			store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.Process(ctx, dedup.Request{Group: "g", Key: "k"}, func(context.Context) error { return nil }); err != nil {
				t.Fatal(err)
			}
			a, err := admin.New(db, admin.Config{TablePrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			pending, err := a.MigrationStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range pending {
				if s.AppliedAt != nil {
					t.Fatalf("before: %+v applied", s)
				}
			}
			ran, err := a.Migrate(ctx, false)
			if err != nil || len(ran) != len(pending) {
				t.Fatalf("migrate = %+v, %v", ran, err)
			}
			st, err := a.Key(ctx, "g", "k")
			if err != nil || st.Status != admin.KeyDone {
				t.Fatalf("data after adoption = %+v, %v", st, err)
			}
			done, err := a.MigrationStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range done {
				if s.AppliedAt == nil || s.Modified || s.Unknown {
					t.Fatalf("after: %+v", s)
				}
			}
			// The components' own Migrate finds nothing left to do.
			if err := store.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if again, err := a.Migrate(ctx, true); err != nil || len(again) != 0 {
				t.Fatalf("dry run after = %+v, %v", again, err)
			}
			recs, _, err := a.Audit(ctx, admin.AuditFilter{Action: admin.ActionMigrate}, admin.Page{})
			if err != nil || len(recs) != 1 || recs[0].Count != int64(len(ran)) || recs[0].Target != "all" {
				t.Fatalf("migration audit = %+v, %v", recs, err)
			}
		})
	}
}

// With an outbox, a redrive writes the message into it in the same
// transaction that marks the dead letter redriven and clears its key; the
// relay then sends it with its own ID. A message the outbox refuses rolls
// the whole redrive back: the dead letter waits, its key stays dead.
func TestRedriveDeadThroughOutbox(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			ob, err := outbox.New(b.db, outbox.Config{IDSource: admin.NoIDs{}, TablePrefix: b.prefix, MaxBodySize: 12})
			if err != nil {
				t.Fatal(err)
			}
			a, err := admin.New(b.db, admin.Config{TablePrefix: b.prefix, Outbox: ob})
			if err != nil {
				t.Fatal(err)
			}
			small := b.bury(t, "g", "orders", "k1", "boom") // body "body of k1": 10 bytes
			big := b.bury(t, "g", "orders", "k-too-large", "boom")
			// The same message ID already sent through the outbox once.
			if err := b.db.Transaction(func(tx *gorm.DB) error {
				return ob.Enqueue(tx, &idemq.Message{ID: "m-k1", Topic: "orders", Body: []byte("body of k1")})
			}); err != nil {
				t.Fatal(err)
			}
			if err := b.db.Exec("UPDATE " + ob.Table() + " SET status = 1").Error; err != nil {
				t.Fatal(err)
			}
			res, err := a.RedriveDead(b.ctx, admin.DeadFilter{IDs: []int64{small, big}}, admin.ActionConfig{})
			if err != nil || res.Done != 1 || len(res.Failed) != 1 || res.Failed[0].ID != big {
				t.Fatalf("redrive = %+v, %v", res, err)
			}
			if st, _ := a.Key(b.ctx, "g", "k-too-large"); st.Status != admin.KeyDead {
				t.Fatalf("refused message's key = %s, want dead", st.Status)
			}
			if n, _ := a.CountDead(b.ctx, admin.DeadFilter{IDs: []int64{big}}); n != 1 {
				t.Fatal("refused message's dead letter is not waiting")
			}
			if st, _ := a.Key(b.ctx, "g", "k1"); st.Status != admin.KeyNew {
				t.Fatalf("redriven key = %s, want new", st.Status)
			}
			var sent []*idemq.Message
			relay, err := outbox.NewRelay(ob, outbox.SenderFunc(func(_ context.Context, m *idemq.Message) (string, error) {
				sent = append(sent, m)
				return "broker-id", nil
			}), outbox.RelayConfig{ID: "redrive"})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := relay.RunOnce(b.ctx); err != nil || n != 1 {
				t.Fatalf("relay sent %d, %v", n, err)
			}
			if len(sent) != 1 || sent[0].ID != "m-k1" || string(sent[0].Body) != "body of k1" {
				t.Fatalf("sent = %+v", sent)
			}
		})
	}
}

// Two operators redriving the same dead letters at once publish each
// message once: the second finds them taken and skips them.
func TestConcurrentRedrivePublishesOnce(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			for _, k := range []string{"a", "b", "c", "d", "e"} {
				b.bury(t, "g", "orders", k, "boom")
			}
			results := make(chan admin.ActionResult, 2)
			errs := make(chan error, 2)
			start := make(chan struct{})
			for i := 0; i < 2; i++ {
				go func() {
					<-start
					res, err := b.admin.RedriveDead(b.ctx, admin.DeadFilter{All: true}, admin.ActionConfig{})
					results <- res
					errs <- err
				}()
			}
			close(start)
			var done, skipped int64
			for i := 0; i < 2; i++ {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
				r := <-results
				done += r.Done
				skipped += r.Skipped
			}
			if n := len(b.sent.all()); n != 5 || done != 5 {
				t.Fatalf("published %d, done %d, skipped %d; want each of 5 once", n, done, skipped)
			}
		})
	}
}

// A dead letter whose body was cut (longer than dedup.MaxDeadLetterBody)
// shows its whole size and hash, and is never redriven, through a sender
// or through the outbox: it would send a different message under the
// original ID. It stays waiting, its key dead.
func TestTruncatedDeadLetterIsNotRedriven(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			big := make([]byte, dedup.MaxDeadLetterBody+10)
			id, err := b.store.Bury(b.ctx, &dedup.DeadLetter{Group: "g", Key: "big", MessageID: "m-big", Topic: "t", Body: big, Reason: "boom"})
			if err != nil {
				t.Fatal(err)
			}
			dl, err := b.admin.DeadLetter(b.ctx, id)
			if err != nil || !dl.Truncated || dl.BodySize != int64(len(big)) || dl.BodySHA256 == "" || len(dl.Body) != dedup.MaxDeadLetterBody {
				t.Fatalf("dead letter = truncated %v size %d sha %q kept %d, %v", dl.Truncated, dl.BodySize, dl.BodySHA256, len(dl.Body), err)
			}
			ob, err := outbox.New(b.db, outbox.Config{IDSource: admin.NoIDs{}, TablePrefix: b.prefix})
			if err != nil {
				t.Fatal(err)
			}
			viaOutbox, err := admin.New(b.db, admin.Config{TablePrefix: b.prefix, Outbox: ob})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []*admin.Admin{b.admin, viaOutbox} {
				res, err := a.RedriveDead(b.ctx, admin.DeadFilter{IDs: []int64{id}}, admin.ActionConfig{})
				if err != nil || res.Done != 0 || len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Error, "cannot be redriven") {
					t.Fatalf("redrive = %+v, %v", res, err)
				}
			}
			if len(b.sent.all()) != 0 {
				t.Fatal("a truncated letter was published")
			}
			if st, _ := b.admin.OutboxStats(b.ctx); st.Pending != 0 {
				t.Fatal("a truncated letter was written to the outbox")
			}
			if st, _ := b.admin.Key(b.ctx, "g", "big"); st.Status != admin.KeyDead {
				t.Fatalf("key = %s, want dead", st.Status)
			}
			if res, err := b.admin.DiscardDead(b.ctx, admin.DeadFilter{IDs: []int64{id}}, admin.ActionConfig{}); err != nil || res.Done != 1 {
				t.Fatalf("discard = %+v, %v", res, err)
			}
		})
	}
}
