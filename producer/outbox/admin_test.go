package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

func TestListAndStats(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueue(t,
			&idemq.Message{Topic: "orders", Keys: []string{"k1"}, Body: []byte("sent")},
			&idemq.Message{Topic: "audit", Body: []byte("fails")},
			&idemq.Message{Topic: "orders", Body: []byte("waits")},
			&idemq.Message{Topic: "orders", Body: []byte("claimed")},
		)
		if st := b.stats(t); st.Pending != 4 || st.Sent != 0 || st.Failed != 0 || st.Claimed != 0 {
			t.Fatalf("initial stats = %+v", st)
		}
		s := &recSender{fail: func(m *idemq.Message, _ int) error {
			if m.Topic == "audit" {
				return idemq.Permanent(errors.New("no route"))
			}
			return nil
		}}
		r := newRelay(t, b.ob, s, RelayConfig{})
		if n, err := r.SendNow(context.Background(), ids[0], ids[1]); err != nil || n != 1 {
			t.Fatalf("SendNow = %d, %v", n, err)
		}
		holder := newRelay(t, b.ob, s, RelayConfig{Visibility: time.Hour})
		holder.skipMark = func(string) bool { return true }
		if n, err := holder.SendNow(context.Background(), ids[3]); err != nil || n != 1 {
			t.Fatalf("SendNow = %d, %v", n, err)
		}
		// The waiting row was enqueued an hour ago (by the database clock).
		past, arg := b.ago(time.Hour)
		b.exec(t, "UPDATE "+b.ob.Table()+" SET created_at = "+past+" WHERE message_id = ?", arg, ids[2])

		st := b.stats(t)
		if st.Pending != 2 || st.Claimed != 1 || st.Sent != 1 || st.Failed != 1 {
			t.Fatalf("stats = %+v, want 2 pending (1 claimed), 1 sent, 1 failed", st)
		}
		if st.OldestPendingAge < 59*time.Minute || st.OldestPendingAge > 61*time.Minute {
			t.Fatalf("oldest pending age = %s, want about 1h", st.OldestPendingAge)
		}

		all, err := b.ob.List(context.Background(), Filter{})
		if err != nil || len(all) != 4 {
			t.Fatalf("List() = %d entries, %v", len(all), err)
		}
		for i, e := range all {
			if e.MessageID != ids[i] || (i > 0 && e.ID <= all[i-1].ID) {
				t.Fatalf("List order: entry %d is %s", i, e.MessageID)
			}
		}
		if all[0].Status != StatusSent || all[0].SentAt == nil || all[0].BodySize != 4 || len(all[0].Keys) != 1 || all[0].Keys[0] != "k1" {
			t.Fatalf("sent entry = %+v", all[0])
		}
		if all[2].Age < 59*time.Minute || all[2].Age > 61*time.Minute {
			t.Fatalf("age of the hour-old row = %s", all[2].Age)
		}
		if all[3].ClaimUntil == nil || !all[3].ClaimUntil.After(all[3].CreatedAt.Add(50*time.Minute)) {
			t.Fatalf("claimed entry deadline = %v (created %v), want about an hour ahead", all[3].ClaimUntil, all[3].CreatedAt)
		}

		failed, err := b.ob.List(context.Background(), Filter{Statuses: []Status{StatusFailed}})
		if err != nil || len(failed) != 1 || failed[0].MessageID != ids[1] || !strings.Contains(failed[0].LastError, "no route") {
			t.Fatalf("List(failed) = %+v, %v", failed, err)
		}
		pending, err := b.ob.List(context.Background(), Filter{Statuses: []Status{StatusPending}, Topic: "orders", Limit: 1})
		if err != nil || len(pending) != 1 || pending[0].MessageID != ids[2] {
			t.Fatalf("List(pending orders, limit 1) = %+v, %v", pending, err)
		}
		page, err := b.ob.List(context.Background(), Filter{AfterID: pending[0].ID})
		if err != nil || len(page) != 1 || page[0].MessageID != ids[3] {
			t.Fatalf("List(after) = %+v, %v", page, err)
		}
	})
}

func TestCleanupDeletesOnlyOldSentRows(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", 7)
		s := &recSender{fail: func(m *idemq.Message, _ int) error {
			if string(m.Body) == "m6" {
				return idemq.Permanent(errors.New("bad"))
			}
			return nil
		}}
		r := newRelay(t, b.ob, s, RelayConfig{})
		if _, err := r.SendNow(context.Background(), ids[:6]...); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SendNow(context.Background(), ids[6]); err != nil {
			t.Fatal(err)
		}
		// 5 of the 6 sent rows were sent two days ago.
		past, arg := b.ago(48 * time.Hour)
		b.exec(t, "UPDATE "+b.ob.Table()+" SET sent_at = "+past+" WHERE status = 1 AND message_id <> ?", arg, ids[5])
		b.exec(t, "UPDATE "+b.ob.Table()+" SET created_at = "+past+" WHERE status = 2", arg)

		n, err := b.ob.Cleanup(context.Background(), 24*time.Hour, 2)
		if err != nil || n != 5 {
			t.Fatalf("Cleanup = %d, %v; want 5", n, err)
		}
		left, err := b.ob.List(context.Background(), Filter{})
		if err != nil || len(left) != 2 || left[0].MessageID != ids[5] || left[1].Status != StatusFailed {
			t.Fatalf("rows left = %+v, %v; want the recent sent row and the failed one", left, err)
		}
		if n, err := b.ob.Cleanup(context.Background(), 24*time.Hour, 2); err != nil || n != 0 {
			t.Fatalf("second Cleanup = %d, %v", n, err)
		}
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		if err := b.ob.Migrate(context.Background()); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		b.enqueue(t, &idemq.Message{Topic: "t"})
		if st := b.stats(t); st.Pending != 1 {
			t.Fatalf("stats = %+v", st)
		}
	})
}

func TestSchemaAndPrefix(t *testing.T) {
	for _, p := range []string{"a", "idemq_", "t0123456789abcdef0123456789abcd"} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "1a", "A", "a-b", "a b", "a;drop", "t0123456789abcdef0123456789abcde"} {
		if err := ValidatePrefix(p); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidPrefix", p, err)
		}
	}
	for _, dialect := range []string{DialectSQLite, DialectPostgres, DialectMySQL} {
		s, err := Schema(dialect, "shop_")
		if err != nil {
			t.Fatalf("Schema(%s): %v", dialect, err)
		}
		if strings.Contains(s, "${prefix}") || !strings.Contains(s, "CREATE TABLE IF NOT EXISTS shop_outbox") {
			t.Fatalf("Schema(%s) did not substitute the prefix", dialect)
		}
		for _, col := range []string{"message_id", "sharding_key", "delay_level", "next_attempt_at", "claimed_by", "claim_until", "last_error", "broker_msg_id", "sent_at"} {
			if !strings.Contains(s, col) {
				t.Fatalf("Schema(%s) lacks column %s", dialect, col)
			}
		}
	}
	if _, err := Schema("oracle", "x_"); !errors.Is(err, ErrUnsupportedDialect) {
		t.Fatalf("Schema(oracle) = %v", err)
	}
	db := testenv.OpenSQLite(t)
	if _, err := New(db, Config{IDSource: &seqIDs{}, TablePrefix: "Bad"}); !errors.Is(err, ErrInvalidPrefix) {
		t.Fatalf("New with a bad prefix = %v", err)
	}
	if _, err := New(db, Config{}); !errors.Is(err, ErrNoIDSource) {
		t.Fatalf("New without IDSource = %v", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2}
	for attempts, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 500: 10 * time.Second} {
		if got := b.Delay(attempts, nil); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempts, got, want)
		}
	}
	b.Jitter = 0.25
	if lo, hi := b.Delay(3, func() float64 { return 0 }), b.Delay(3, func() float64 { return 0.999999 }); lo != 3*time.Second || hi < 4990*time.Millisecond || hi > 5*time.Second {
		t.Errorf("jittered Delay(3) spans %s..%s, want 3s..5s", lo, hi)
	}
}

func TestRelayConfigValidation(t *testing.T) {
	b := setup(t, testenv.Databases()[0], Config{})
	cases := map[string]RelayConfig{
		"visibility not above send timeout": {Visibility: time.Second, SendTimeout: time.Second},
		"negative batch":                    {BatchSize: -1},
		"negative attempts":                 {MaxAttempts: -1},
		"multiplier below 1":                {Backoff: Backoff{Multiplier: 0.5}},
		"max below initial":                 {Backoff: Backoff{Initial: time.Minute, Max: time.Second}},
		"jitter of 1":                       {Backoff: Backoff{Jitter: 1}},
		"relay ID too long":                 {ID: strings.Repeat("r", 161)},
	}
	for name, cfg := range cases {
		if _, err := NewRelay(b.ob, &recSender{}, cfg); err == nil {
			t.Errorf("%s: NewRelay accepted %+v", name, cfg)
		}
	}
	if _, err := NewRelay(b.ob, nil, RelayConfig{}); err == nil {
		t.Error("NewRelay accepted a nil sender")
	}
}
