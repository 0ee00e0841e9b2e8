package sqldedup_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
)

func TestProcessBatch(t *testing.T) {
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			ctx := context.Background()
			reqs := func(keys ...string) []dedup.Request {
				out := make([]dedup.Request, len(keys))
				for i, k := range keys {
					out[i] = dedup.Request{Group: "g", Key: k}
				}
				return out
			}
			if err := db.Exec("CREATE TABLE " + s.Table("effects") + " (k VARCHAR(191) NOT NULL)").Error; err != nil {
				t.Fatal(err)
			}
			write := func(rs []dedup.Request) sqldedup.BatchFunc {
				return func(ctx context.Context, fresh []int) error {
					for _, i := range fresh {
						if err := dedup.Tx(ctx).Exec("INSERT INTO "+s.Table("effects")+" (k) VALUES (?)", rs[i].Key).Error; err != nil {
							return err
						}
					}
					return nil
				}
			}
			count := func() int64 {
				var n int64
				db.Raw("SELECT COUNT(*) FROM " + s.Table("effects")).Scan(&n)
				return n
			}

			first := reqs("a", "b", "c")
			out, err := s.ProcessBatch(ctx, first, write(first))
			if err != nil || !slices.Equal(out, []dedup.Outcome{dedup.Processed, dedup.Processed, dedup.Processed}) {
				t.Fatalf("first batch: %v %v", out, err)
			}
			// b is done, d appears twice, e is new.
			second := reqs("b", "d", "d", "e")
			var fresh []int
			out, err = s.ProcessBatch(ctx, second, func(ctx context.Context, f []int) error {
				fresh = f
				return write(second)(ctx, f)
			})
			want := []dedup.Outcome{dedup.Duplicate, dedup.Processed, dedup.Duplicate, dedup.Processed}
			if err != nil || !slices.Equal(out, want) || !slices.Equal(fresh, []int{1, 3}) {
				t.Fatalf("second batch: %v %v fresh %v, want %v fresh [1 3]", out, err, fresh, want)
			}
			if n := count(); n != 5 {
				t.Fatalf("effects = %d, want 5", n)
			}
			// A failing batch records nothing: its keys run again later.
			third := reqs("f", "g")
			boom := errors.New("boom")
			if _, err := s.ProcessBatch(ctx, third, func(ctx context.Context, f []int) error {
				if err := write(third)(ctx, f); err != nil {
					return err
				}
				return boom
			}); !errors.Is(err, boom) {
				t.Fatalf("failing batch: %v", err)
			}
			if n := count(); n != 5 {
				t.Fatalf("effects after a failed batch = %d, want 5", n)
			}
			out, err = s.ProcessBatch(ctx, third, write(third))
			if err != nil || !slices.Equal(out, []dedup.Outcome{dedup.Processed, dedup.Processed}) {
				t.Fatalf("retried batch: %v %v", out, err)
			}
			// Single-message Process sees batch-written keys as duplicates.
			res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "e"}, func(context.Context) error { return nil })
			if err != nil || res.Outcome != dedup.Duplicate {
				t.Fatalf("Process after batch: %v %v", res.Outcome, err)
			}
			if _, err := s.ProcessBatch(ctx, []dedup.Request{{Group: "g", Key: "x"}, {Group: "h", Key: "y"}}, write(nil)); err == nil {
				t.Fatal("batch mixing groups accepted")
			}
			if _, err := s.ProcessBatch(ctx, []dedup.Request{{Group: "g", Key: ""}}, write(nil)); err == nil {
				t.Fatal("batch with an empty key accepted")
			}
		})
	}
}
