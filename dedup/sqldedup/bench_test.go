package sqldedup_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/benchwork"
	"github.com/idemq/idemq/internal/testenv"
)

// BenchmarkPayout measures the business transaction bare and behind
// transactional dedup, single and batched, and duplicate rejection, on each
// database. Compare the sub-benchmarks of one database with each other:
// cmd/idemq-bench prints the same cases as ratios.
//
//	go test -run '^$' -bench Payout -cpu 8 ./dedup/sqldedup/
func BenchmarkPayout(b *testing.B) {
	for _, d := range databases() {
		b.Run(d.Name, func(b *testing.B) {
			db := d.Open(b)
			ctx := context.Background()
			prefix := testenv.TablePrefix(b)
			w, err := benchwork.Setup(ctx, db, prefix)
			if err != nil {
				b.Fatal(err)
			}
			s, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			run := strconv.FormatInt(time.Now().UnixNano(), 36)
			var seq atomic.Int64
			next := func(kind string) string { return kind + run + ":" + strconv.FormatInt(seq.Add(1), 10) }

			b.Run("bare", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := w.Bare(ctx, next("bare")); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("dedup", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := w.Dedup(ctx, s, "bench", next("dedup")); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("batch32", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					keys := make([]string, 32)
					for pb.Next() {
						for i := range keys {
							keys[i] = next("batch")
						}
						if err := w.Batch(ctx, s, "bench", keys); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "msgs/s")
			})
			done := next("done")
			if _, err := w.Dedup(ctx, s, "bench", done); err != nil {
				b.Fatal(err)
			}
			b.Run("duplicate", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						out, err := w.Dedup(ctx, s, "bench", done)
						if err != nil || out != dedup.Duplicate {
							b.Error(fmt.Errorf("duplicate answered %v, %v", out, err))
							return
						}
					}
				})
			})
		})
	}
}
