package sqldedup_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/benchwork"
	"github.com/idemq/idemq/internal/testenv"
)

// TestLeaseMarksShareStatements runs 48 lease-mode deliveries of distinct
// keys, started together, whose handlers all return at once, and checks
// that every one is Processed and DONE while, on SQLite with a pool of one
// connection, their claims and marks took fewer statements than
// deliveries (and elsewhere, SQLite with a larger pool included, one each).
func TestLeaseMarksShareStatements(t *testing.T) {
	const n = 48
	type target struct {
		testenv.DB
		oneConn bool
	}
	var targets []target
	for _, d := range testenv.Databases() {
		targets = append(targets, target{d, false})
		if d.Dialect == "sqlite" {
			targets = append(targets, target{d, true})
		}
	}
	for _, d := range targets {
		name := d.Name
		if d.oneConn {
			name += "-one-connection"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			if d.oneConn {
				sqlDB, err := db.DB()
				if err != nil {
					t.Fatal(err)
				}
				sqlDB.SetMaxOpenConns(1)
			}
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease, LeaseDuration: 10 * time.Second})
			var arrived sync.WaitGroup
			arrived.Add(n)
			release := make(chan struct{})
			var wg sync.WaitGroup
			errs := make([]error, n)
			outs := make([]dedup.Outcome, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := fmt.Sprintf("k%02d", i)
					res, err := s.Process(ctx, dedup.Request{Group: "g", Key: key, MessageID: key}, func(context.Context) error {
						arrived.Done()
						<-release
						return nil
					})
					errs[i], outs[i] = err, res.Outcome
				}()
			}
			arrived.Wait() // every key is claimed and its handler running
			close(release)
			wg.Wait()
			for i := range errs {
				if errs[i] != nil || outs[i] != dedup.Processed {
					t.Fatalf("delivery %d: %v %v", i, outs[i], errs[i])
				}
			}
			var done int64
			if err := db.Raw("SELECT COUNT(*) FROM " + s.Table("dedup") + " WHERE status = 2 AND owner = ''").Scan(&done).Error; err != nil {
				t.Fatal(err)
			}
			if done != n {
				t.Errorf("%d keys DONE, want %d", done, n)
			}
			// Only SQLite on one connection shares statements; the others
			// run one per claim and one per mark (leasebatch.go says why).
			shared := d.oneConn
			for what, st := range map[string]int64{"marks": s.MarkStatements(), "claims": s.ClaimStatements()} {
				if (shared && (st >= n || st == 0)) || (!shared && st != n) {
					t.Errorf("%d %s took %d statements on %s; want them to share on SQLite only", n, what, st, d.Dialect)
				} else {
					t.Logf("%d %s in %d statements", n, what, st)
				}
			}
		})
	}
}

// TestLeaseMarkBatchAnswersEachMark runs one batch of marks in which some
// owners no longer hold their keys (taken over, released, already done)
// and checks that exactly the holders' marks apply and the others get
// ErrLeaseLost, on every database (only SQLite runs them as one statement).
func TestLeaseMarkBatchAnswersEachMark(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease})
			tbl := s.Table("dedup")
			ins := func(key string, status int, owner string) {
				t.Helper()
				if err := db.Exec("INSERT INTO "+tbl+" (consumer_group, dedup_key, status, owner, lease_until, created_at, updated_at) VALUES ('g', ?, ?, ?, ?, 1, 1)",
					key, status, owner, time.Now().Add(time.Hour).UnixMilli()).Error; err != nil {
					t.Fatal(err)
				}
			}
			ins("held-1", 1, "o1")
			ins("held-2", 1, "o2")
			ins("taken", 1, "successor") // the mark's owner "zombie" lost it
			ins("done", 2, "")
			errs := s.RunMarks([]sqldedup.Mark{
				{"g", "held-1", "o1"},
				{"g", "taken", "zombie"},
				{"g", "held-2", "o2"},
				{"g", "gone", "o3"}, // released: no row
				{"g", "done", "o4"},
			})
			want := []bool{true, false, true, false, false}
			for i, err := range errs {
				if want[i] && err != nil {
					t.Errorf("mark %d: %v, want applied", i, err)
				}
				if !want[i] && !errors.Is(err, dedup.ErrLeaseLost) {
					t.Errorf("mark %d: %v, want ErrLeaseLost", i, err)
				}
			}
			var rows []struct {
				DedupKey string
				Status   int
				Owner    string
			}
			if err := db.Raw("SELECT dedup_key, status, owner FROM " + tbl + " ORDER BY dedup_key").Scan(&rows).Error; err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprint(rows)
			if wantRows := "[{done 2 } {held-1 2 } {held-2 2 } {taken 1 successor}]"; got != wantRows {
				t.Errorf("rows = %s, want %s", got, wantRows)
			}
		})
	}
}

// TestLeaseMarkBatchFailureMarksOneByOne makes the shared statement of a
// batch fail and checks that every mark is then run on its own, with its
// own answer, so one failure does not cost the whole batch its marks.
func TestLeaseMarkBatchFailureMarksOneByOne(t *testing.T) {
	for _, d := range testenv.Databases() {
		if d.Dialect != "sqlite" {
			continue // marks one by one always
		}
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease})
			for _, k := range []string{"a", "b"} {
				if err := db.Exec("INSERT INTO "+s.Table("dedup")+" (consumer_group, dedup_key, status, owner, lease_until, created_at, updated_at) VALUES ('g', ?, 1, ?, ?, 1, 1)",
					k, "o-"+k, time.Now().Add(time.Hour).UnixMilli()).Error; err != nil {
					t.Fatal(err)
				}
			}
			s.FailMarkBatches(errors.New("injected: deadlock"))
			before := s.MarkStatements()
			errs := s.RunMarks([]sqldedup.Mark{{"g", "a", "o-a"}, {"g", "b", "o-b"}, {"g", "c", "o-c"}})
			if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], dedup.ErrLeaseLost) {
				t.Errorf("marks = %v; want applied, applied, ErrLeaseLost", errs)
			}
			if n := s.MarkStatements() - before; n != 4 {
				t.Errorf("%d statements, want 4 (the failed batch, then one per mark)", n)
			}
		})
	}
}

// TestLeaseMarkBatchUsesPrimaryKey checks that a batch of marks finds its
// rows through the primary key on a table of 20,000 rows: a scan would
// make every batch cost the whole table.
func TestLeaseMarkBatchUsesPrimaryKey(t *testing.T) {
	for _, d := range testenv.Databases() {
		if d.Dialect != "sqlite" {
			continue // marks one by one always
		}
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease})
			now := time.Now().UnixMilli()
			if err := benchwork.FillDedup(ctx, db, s.Table("dedup"), "g", 0, 20000, now-3600_000, now); err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("ANALYZE " + s.Table("dedup")).Error; err != nil {
				t.Fatal(err)
			}
			var marks []sqldedup.Mark
			for i := 0; i < 8; i++ {
				marks = append(marks, sqldedup.Mark{"g", fmt.Sprintf("k%d", i*977), fmt.Sprintf("o%d", i)})
			}
			q, args := s.MarkBatchQuery(marks)
			plan := explain(t, db, d.Dialect, q, args...)
			if !strings.Contains(plan, "SEARCH") || strings.Contains(plan, "SCAN "+s.Table("dedup")) {
				t.Errorf("a batch of marks does not find its rows by primary key:\n%s", plan)
			}
		})
	}
}

// TestLeaseClaimBatchAnswersEachClaim runs one shared claim statement over
// new keys and keys already present (done, held by another owner), then
// the same with the shared statement failing, and checks each claim's
// answer and the rows: new keys claimed by their own owner with a fencing
// token, present keys untouched. Only SQLite shares claim statements.
func TestLeaseClaimBatchAnswersEachClaim(t *testing.T) {
	for _, d := range testenv.Databases() {
		if d.Dialect != "sqlite" {
			continue
		}
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease})
			tbl := s.Table("dedup")
			if err := db.Exec("INSERT INTO "+tbl+" (consumer_group, dedup_key, status, owner, lease_until, fence, created_at, updated_at) VALUES ('g', 'done', 2, '', 0, 5, 1, 1), ('g', 'held', 1, 'other', ?, 7, 1, 1)",
				time.Now().Add(time.Hour).UnixMilli()).Error; err != nil {
				t.Fatal(err)
			}
			check := func(t *testing.T, suffix string) {
				keys := []string{"new-b" + suffix, "done", "new-a" + suffix, "held"}
				owners := []string{"ob" + suffix, "od" + suffix, "oa" + suffix, "oh" + suffix}
				got := s.RunClaims(keys, owners)
				for i, want := range []bool{true, false, true, false} {
					if got[i].Err != nil || got[i].Claimed != want || (want && got[i].Fence == 0) {
						t.Errorf("claim of %s: %+v, want claimed=%v with a fence", keys[i], got[i], want)
					}
				}
				var rows []struct {
					DedupKey, Owner string
					Status          int
					Fence           uint64
				}
				if err := db.Raw("SELECT dedup_key, owner, status, fence FROM "+tbl+" WHERE dedup_key IN (?, ?, 'done', 'held') ORDER BY dedup_key",
					"new-a"+suffix, "new-b"+suffix).Scan(&rows).Error; err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("[{done  2 5} {held other 1 7} {new-a%s oa%s 1 %d} {new-b%s ob%s 1 %d}]", suffix, suffix, got[2].Fence, suffix, suffix, got[0].Fence)
				if g := fmt.Sprint(rows); g != want {
					t.Errorf("rows = %s, want %s", g, want)
				}
			}
			t.Run("shared", func(t *testing.T) { check(t, "1") })
			s.FailClaimBatches(errors.New("injected: deadlock"))
			before := s.ClaimStatements()
			t.Run("fallback", func(t *testing.T) { check(t, "2") })
			if n := s.ClaimStatements() - before; n != 5 {
				t.Errorf("%d statements, want 5 (the failed batch, then one per claim)", n)
			}
		})
	}
}

// TestLeaseMarkBatchOneMarkPerKey checks that a zombie's mark and its
// successor's never share a batch: the rows a batch changed are told
// apart by key.
func TestLeaseMarkBatchOneMarkPerKey(t *testing.T) {
	batch, rest := sqldedup.TakeMarks([]sqldedup.Mark{
		{"g", "k", "zombie"}, {"g", "k2", "a"}, {"g", "k", "successor"}, {"h", "k", "b"},
	})
	if want := []sqldedup.Mark{{"g", "k", "zombie"}, {"g", "k2", "a"}, {"h", "k", "b"}}; !slices.Equal(batch, want) {
		t.Errorf("batch = %v, want %v", batch, want)
	}
	if want := []sqldedup.Mark{{"g", "k", "successor"}}; !slices.Equal(rest, want) {
		t.Errorf("rest = %v, want %v", rest, want)
	}
}

// TestLeaseHostileKeyDoesNotFailItsBatch delivers, all at once in lease
// mode, 16 ordinary keys and keys the database refuses (invalid UTF-8, a
// NUL byte, one longer than the column): the ordinary ones are processed
// whatever batch they shared with a refused one, and each refused one fails
// on its own without running its handler.
func TestLeaseHostileKeyDoesNotFailItsBatch(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease, LeaseDuration: 10 * time.Second})
			keys := []string{"bad-\xff\xfe", "bad-\x00nul", "bad-" + strings.Repeat("k", 5000)}
			for i := 0; i < 16; i++ {
				keys = append(keys, fmt.Sprintf("ok-%02d", i))
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			ran := map[string]int{}
			errs := make([]error, len(keys))
			outs := make([]dedup.Outcome, len(keys))
			for i, k := range keys {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					res, err := s.Process(ctx, dedup.Request{Group: "g", Key: k, MessageID: k}, func(context.Context) error {
						mu.Lock()
						ran[k]++
						mu.Unlock()
						return nil
					})
					errs[i], outs[i] = err, res.Outcome
				}()
			}
			close(start)
			wg.Wait()
			for i, k := range keys {
				if strings.HasPrefix(k, "ok-") {
					if errs[i] != nil || outs[i] != dedup.Processed || ran[k] != 1 {
						t.Errorf("key %s: %v %v, handler ran %d times; want processed once", k, outs[i], errs[i], ran[k])
					}
				} else if outs[i] == dedup.Processed && ran[k] != 1 {
					t.Errorf("hostile key %q processed with its handler run %d times", k[:min(len(k), 12)], ran[k])
				}
			}
		})
	}
}
