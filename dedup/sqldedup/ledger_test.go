package sqldedup_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/testenv"
)

// A key whose success could not clear its attempts (the database was down
// at that moment) is done, not stuck: StaleAttempts skips it and deletes
// the leftover; likewise for a dead key whose attempts survived. A key that
// is really stuck is still listed.
func TestStaleAttemptsSkipsDoneAndDeadKeys(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			ctx := context.Background()
			for _, k := range []string{"stuck", "done", "dead"} {
				if _, err := s.RecordFailure(ctx, "g", k, 1, errors.New("boom")); err != nil {
					t.Fatal(err)
				}
			}
			// "done" succeeded at its next delivery, "dead" was marked dead,
			// and neither record was cleared.
			res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "done"}, func(context.Context) error { return nil })
			if err != nil || res.Outcome != dedup.Processed {
				t.Fatalf("Process: %v, %v", res, err)
			}
			if err := s.MarkDead(ctx, "g", "dead"); err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("UPDATE "+s.Table("attempts")+" SET last_at = last_at - ?", time.Hour.Milliseconds()).Error; err != nil {
				t.Fatal(err)
			}
			stale, err := s.StaleAttempts(ctx, 30*time.Minute, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(stale) != 1 || stale[0].Key != "stuck" {
				t.Fatalf("stale = %+v, want only the stuck key", stale)
			}
			var left []string
			if err := db.Raw("SELECT dedup_key FROM " + s.Table("attempts") + " ORDER BY dedup_key").Scan(&left).Error; err != nil {
				t.Fatal(err)
			}
			if len(left) != 1 || left[0] != "stuck" {
				t.Fatalf("attempts rows left = %q, want the leftovers of done and dead keys deleted", left)
			}
		})
	}
}

// Migrate upgrades the tables of the previous release (step 0001, created
// by the unversioned Migrate, with rows in them) to the current schema: the
// dedup table's fence column, the dead letters' body size, hash and
// truncated columns and their key index. The old rows stay readable, and
// Bury and a lease claim work on the upgraded tables.
func TestMigrateUpgradesPreviousSchema(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			testenv.DropTables(t, db, prefix+"dedup", prefix+"attempts", prefix+"dead_letters", prefix+"schema_migrations")
			steps, err := migrate.Steps("dedup", d.Dialect)
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range steps[0].Statements(prefix) {
				if err := db.Exec(stmt).Error; err != nil {
					t.Fatal(err)
				}
			}
			table := prefix + "dead_letters"
			if err := db.Exec("INSERT INTO "+table+" (consumer_group, dedup_key, message_id, topic, msg_keys, properties, reason, history, attempts, first_failed_at, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				"g", "old", "1", "t", "[]", "{}", "old failure", "[]", 3, 1, 2).Error; err != nil {
				t.Fatalf("old row: %v", err)
			}
			if db.Migrator().HasColumn(prefix+"dedup", "fence") || db.Migrator().HasColumn(table, "body_size") {
				t.Fatal("step 0001 already has the new columns: this test would prove nothing")
			}
			s := newStore(t, db, sqldedup.Config{TablePrefix: prefix})
			ctx := context.Background()
			for i := 0; i < 2; i++ {
				if err := s.Migrate(ctx); err != nil {
					t.Fatalf("Migrate %d: %v", i+1, err)
				}
			}
			if !db.Migrator().HasColumn(prefix+"dedup", "fence") {
				t.Error("column fence missing after Migrate")
			}
			for _, c := range []string{"body_size", "body_sha256", "truncated"} {
				if !db.Migrator().HasColumn(table, c) {
					t.Errorf("column %s missing after Migrate", c)
				}
			}
			if !db.Migrator().HasIndex(table, table+"_key") {
				t.Errorf("index %s_key missing after Migrate", table)
			}
			old, err := s.DeadLetters(ctx, dedup.DeadLetterFilter{Group: "g"})
			if err != nil || len(old) != 1 || old[0].Reason != "old failure" {
				t.Fatalf("old dead letters after Migrate = %+v, %v", old, err)
			}
			lease := newStore(t, db, sqldedup.Config{TablePrefix: prefix, Mode: sqldedup.Lease})
			if r, err := lease.Process(ctx, dedup.Request{Group: "g", Key: "leased"}, func(context.Context) error { return nil }); err != nil || r.Outcome != dedup.Processed {
				t.Fatalf("lease claim on the upgraded table = %+v, %v", r, err)
			}
			id, err := s.Bury(ctx, &dedup.DeadLetter{Group: "g", Key: "k", Body: []byte("abc"), Reason: "boom"})
			if err != nil {
				t.Fatal(err)
			}
			dl, err := s.DeadLetter(ctx, id)
			if err != nil || dl.BodySize != 3 || dl.Truncated {
				t.Fatalf("dead letter %+v, %v", dl, err)
			}
		})
	}
}

// Two live dead letters of one message (left by a version that buried
// every failing copy) are redriven together: the message is published
// once, and the other letter is redriven with it.
func TestRedriveTwinDeadLettersPublishesOnce(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			ctx := context.Background()
			first, err := s.Bury(ctx, &dedup.DeadLetter{Group: "g", Key: "k", MessageID: "m1", Body: []byte("b"), Reason: "boom"})
			if err != nil {
				t.Fatal(err)
			}
			// The twin, as the earlier version stored it.
			if err := db.Exec("INSERT INTO "+s.Table("dead_letters")+" (consumer_group, dedup_key, message_id, topic, tags, msg_keys, body, properties, attempts, reason, history, first_failed_at, dead_at)"+
				" SELECT consumer_group, dedup_key, message_id, topic, tags, msg_keys, body, properties, attempts, reason, history, first_failed_at, dead_at FROM "+
				s.Table("dead_letters")+" WHERE id = ?", first).Error; err != nil {
				t.Fatal(err)
			}
			dls, err := s.DeadLetters(ctx, dedup.DeadLetterFilter{})
			if err != nil || len(dls) != 2 {
				t.Fatalf("dead letters = %d, %v; want the two twins", len(dls), err)
			}
			published := 0
			pub := func(context.Context, *idemq.Message) error { published++; return nil }
			if err := s.Redrive(ctx, dls[1].ID, pub); err != nil {
				t.Fatal(err)
			}
			if err := s.Redrive(ctx, dls[0].ID, pub); !errors.Is(err, dedup.ErrAlreadyRedriven) {
				t.Fatalf("redrive of the twin: %v, want ErrAlreadyRedriven", err)
			}
			if published != 1 {
				t.Fatalf("published %d times, want once", published)
			}
			if left, _ := s.DeadLetters(ctx, dedup.DeadLetterFilter{}); len(left) != 0 {
				t.Fatalf("%d dead letters left unredriven", len(left))
			}
		})
	}
}

// A redrive whose publish fails leaves the key dead and the dead letter
// unredriven: redeliveries of the message are still duplicates.
func TestRedrivePublishFailureKeepsKeyDead(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			ctx := context.Background()
			id, err := s.Bury(ctx, &dedup.DeadLetter{Group: "g", Key: "k", MessageID: "m1", Body: []byte("b"), Reason: "boom"})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Redrive(ctx, id, func(context.Context, *idemq.Message) error { return errors.New("broker down") }); err == nil {
				t.Fatal("redrive with a failing publisher succeeded")
			}
			called := false
			res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "k"}, func(context.Context) error { called = true; return nil })
			if err != nil || res.Outcome != dedup.Duplicate || !res.Dead || called {
				t.Fatalf("delivery after a failed redrive: %+v, %v, handler called %v; want a dead duplicate", res, err, called)
			}
		})
	}
}
