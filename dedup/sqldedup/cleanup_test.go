package sqldedup_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/benchwork"
	"github.com/idemq/idemq/internal/testenv"
)

// explain returns the plan the database chooses for q, as text.
func explain(t *testing.T, db *gorm.DB, dialect, q string, args ...any) string {
	t.Helper()
	prefix := map[string]string{"postgres": "EXPLAIN ", "mysql": "EXPLAIN ", "sqlite": "EXPLAIN QUERY PLAN "}[dialect]
	var rows []map[string]any
	if err := db.Raw(prefix+q, args...).Scan(&rows).Error; err != nil {
		t.Fatalf("explain %s: %v", q, err)
	}
	var b strings.Builder
	for _, r := range rows {
		for k, v := range r {
			if bs, ok := v.([]byte); ok {
				v = string(bs)
			}
			fmt.Fprintf(&b, "%s=%v ", k, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestCleanupUsesTimeIndex checks that a cleanup batch finds its rows
// through the index on done rows' creation time (migration step 0003), on
// a table of 20,000 done rows of which half are expired: without it, every
// batch reads the table.
func TestCleanupUsesTimeIndex(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			now, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			keep := s.Retention().Keep
			start := now.Add(-2 * keep).UnixMilli()
			if err := benchwork.FillDedup(ctx, db, s.Table("dedup"), "g", 0, 20000, start, now.UnixMilli()); err != nil {
				t.Fatal(err)
			}
			analyze := map[string]string{"postgres": "ANALYZE ", "mysql": "ANALYZE TABLE ", "sqlite": "ANALYZE "}[d.Dialect]
			if err := db.Exec(analyze + s.Table("dedup")).Error; err != nil {
				t.Fatal(err)
			}
			q, args := s.CleanupQuery("dedup", now.Add(-keep).UnixMilli(), 500)
			plan := explain(t, db, d.Dialect, q, args...)
			index := s.Table("dedup_done_created")
			if d.Dialect == "mysql" {
				index = s.Table("dedup_status_created")
				if !strings.Contains(plan, "type=range") {
					t.Errorf("cleanup batch is not an index range:\n%s", plan)
				}
			}
			if !strings.Contains(plan, index) {
				t.Errorf("cleanup batch does not use %s:\n%s", index, plan)
			}
		})
	}
}

// TestCleanupRetention checks what Sweep deletes, by the database clock:
// done keys, attempts records and redriven dead letters past the retention,
// in several batches; never a row inside the retention, never a processing
// or dead key, never a dead letter that was not redriven.
func TestCleanupRetention(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{CleanupBatch: 3})
			keep := s.Retention().Keep
			nowT, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			now := nowT.UnixMilli()
			expired := now - keep.Milliseconds() - time.Hour.Milliseconds()
			inside := now - keep.Milliseconds() + time.Minute.Milliseconds()
			dt, at, lt := s.Table("dedup"), s.Table("attempts"), s.Table("dead_letters")
			exec := func(q string, args ...any) {
				t.Helper()
				if err := db.Exec(q, args...).Error; err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			for i := 0; i < 10; i++ {
				for _, k := range []string{"old", "new"} {
					key := fmt.Sprintf("%s-%d", k, i)
					res, err := s.Process(ctx, dedup.Request{Group: "g", Key: key, MessageID: key}, func(context.Context) error { return nil })
					if err != nil || res.Outcome != dedup.Processed {
						t.Fatalf("process %s: %v %v", key, res, err)
					}
				}
			}
			exec("UPDATE "+dt+" SET created_at = ? WHERE dedup_key LIKE 'old-%'", expired)
			exec("UPDATE "+dt+" SET created_at = ? WHERE dedup_key LIKE 'new-%'", inside)
			exec("INSERT INTO "+dt+" (consumer_group, dedup_key, status, owner, lease_until, created_at, updated_at) VALUES ('g', 'processing', 1, 'o', ?, ?, ?)",
				now+time.Hour.Milliseconds(), expired, expired)
			exec("INSERT INTO "+dt+" (consumer_group, dedup_key, status, created_at, updated_at) VALUES ('g', 'dead', 3, ?, ?)", expired, expired)
			exec("INSERT INTO "+at+" (consumer_group, dedup_key, attempts, last_error, history, first_at, last_at) VALUES ('g', 'a-old', 3, 'x', '[]', ?, ?), ('g', 'a-new', 3, 'x', '[]', ?, ?)",
				expired, expired, expired, inside)
			dl := "INSERT INTO " + lt + " (consumer_group, dedup_key, msg_keys, properties, reason, history, first_failed_at, dead_at, redriven_at) VALUES ('g', ?, '[]', '{}', 'r', '[]', ?, ?, ?)"
			exec(dl, "dl-redriven-old", expired, expired, expired)
			exec(dl, "dl-redriven-new", expired, expired, inside)
			exec(dl, "dl-live-old", expired, expired, nil)

			w, err := s.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if w != (sqldedup.Swept{Dedup: 10, Attempts: 1, DeadLetters: 1}) {
				t.Errorf("Sweep = %+v, want 10 dedup rows, 1 attempts record, 1 dead letter", w)
			}
			keys := func(table, col string) string {
				var ks []string
				if err := db.Raw("SELECT " + col + " FROM " + table + " ORDER BY " + col).Scan(&ks).Error; err != nil {
					t.Fatal(err)
				}
				return strings.Join(ks, ",")
			}
			if got, want := keys(dt, "dedup_key"), "dead,new-0,new-1,new-2,new-3,new-4,new-5,new-6,new-7,new-8,new-9,processing"; got != want {
				t.Errorf("dedup keys left = %s, want %s", got, want)
			}
			if got, want := keys(at, "dedup_key"), "a-new"; got != want {
				t.Errorf("attempts left = %s, want %s", got, want)
			}
			if got, want := keys(lt, "dedup_key"), "dl-live-old,dl-redriven-new"; got != want {
				t.Errorf("dead letters left = %s, want %s", got, want)
			}
			// Nothing is left to delete: a second sweep deletes nothing.
			if w, err := s.Sweep(ctx); err != nil || w.Total() != 0 {
				t.Errorf("second Sweep = %+v, %v; want nothing", w, err)
			}
		})
	}
}
