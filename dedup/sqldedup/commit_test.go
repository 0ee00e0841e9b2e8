package sqldedup_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestPostgresCommitAnsweredRollbackIsNotAcked: a statement error that
// reaches the handler only while it reads rows (here the third row divides
// by zero) aborts the PostgreSQL transaction without the store seeing a
// failed statement; COMMIT then answers ROLLBACK without an error. Neither
// the pinned-connection path nor the ordinary one may report Processed.
func TestPostgresCommitAnsweredRollbackIsNotAcked(t *testing.T) {
	db := testenv.OpenPostgres(t)
	for _, plain := range []bool{false, true} {
		name := map[bool]string{false: "one-round-trip", true: "plain-begin"}[plain]
		t.Run(name, func(t *testing.T) {
			cfg := sqldedup.Config{}
			if plain {
				cfg = sqldedup.WithoutFastBegin(cfg)
			}
			s := newStore(t, db, cfg)
			if (s.FastBegin() == "postgres") == plain {
				t.Fatalf("fast begin %q on the %s path", s.FastBegin(), name)
			}
			r := dedup.Request{Group: "g", Key: "aborted-mid-rows"}
			var streamErr error
			res, err := s.Process(context.Background(), r, func(ctx context.Context) error {
				rows, err := dedup.Tx(ctx).Raw("SELECT 1 / (3 - x) FROM generate_series(1, 5) AS x").Rows()
				if err != nil {
					return fmt.Errorf("the query failed up front, the case needs it to fail while reading: %w", err)
				}
				for rows.Next() {
				}
				streamErr = rows.Err() // swallowed
				rows.Close()
				return nil
			})
			if streamErr == nil {
				t.Fatal("reading the rows did not fail: the case proves nothing")
			}
			if !errors.Is(err, sqldedup.ErrNotCommitted) {
				t.Fatalf("Process = %s, %v; want an error wrapping ErrNotCommitted", res.Outcome, err)
			}
			var n int64
			if err := db.Raw("SELECT COUNT(*) FROM "+s.Table("dedup")+" WHERE dedup_key = ?", r.Key).Scan(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d dedup rows after a rolled-back commit", n)
			}
			res, err = s.Process(context.Background(), r, func(context.Context) error { return nil })
			if err != nil || res.Outcome != dedup.Processed {
				t.Fatalf("redelivery: %s, %v; want processed", res.Outcome, err)
			}
		})
	}
}
