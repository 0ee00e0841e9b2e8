package redisdedup_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// sqlStore returns a migrated SQL store on db under a fresh table prefix,
// whose tables are dropped when the test ends.
func sqlStore(t *testing.T, db *gorm.DB, mode sqldedup.Mode) *sqldedup.Store {
	t.Helper()
	prefix := testenv.TablePrefix(t)
	s, err := sqldedup.New(db, sqldedup.Config{Mode: mode, TablePrefix: prefix, Logger: quiet})
	if err != nil {
		t.Fatalf("sqldedup.New: %v", err)
	}
	testenv.DropTables(t, db, s.Table("dedup"), s.Table("attempts"), s.Table("dead_letters"))
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func newFastPath(t *testing.T, inner dedup.Store, client redis.UniversalClient, prefix string) *redisdedup.FastPath {
	t.Helper()
	fp, err := redisdedup.NewFastPath(inner, client, redisdedup.FastPathConfig{
		KeyPrefix: prefix,
		Logger:    quiet,
		// A busy test machine must not turn a marker read into a fallback.
		Timeout:       2 * time.Second,
		RetryInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// markerCount counts the Redis keys under prefix.
func markerCount(t *testing.T, client redis.UniversalClient, prefix string) int {
	t.Helper()
	keys, err := client.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return len(keys)
}

// TestFastPathDuplicateAnswerWritesNoMarkerSQL runs, on every database and
// in both modes, a delivery that commits through the bare SQL store (a
// consumer that did not write its marker), then its duplicates through the
// fast path: each is answered Duplicate by the database, and none writes a
// marker. The delivery that commits through the fast path does.
func TestFastPathDuplicateAnswerWritesNoMarkerSQL(t *testing.T) {
	for _, d := range testenv.Databases() {
		for _, mode := range []sqldedup.Mode{sqldedup.Transactional, sqldedup.Lease} {
			t.Run(d.Name+"/"+mode.String(), func(t *testing.T) {
				ctx := context.Background()
				inner := sqlStore(t, d.Open(t), mode)
				client := testenv.NewRedis(t)
				prefix := testenv.KeyPrefix(t)
				fp := newFastPath(t, inner, client, prefix)
				runs := 0
				fn := func(context.Context) error { runs++; return nil }

				req := dedup.Request{Group: "g", Key: "k1", Fingerprint: dedup.Fingerprint([]byte("a"))}
				if res, err := inner.Process(ctx, req, fn); err != nil || res.Outcome != dedup.Processed {
					t.Fatalf("bare store: %+v, %v", res, err)
				}
				for range 2 {
					res, err := fp.Process(ctx, req, fn)
					if err != nil || res.Outcome != dedup.Duplicate || res.FastPath {
						t.Fatalf("duplicate: %+v, %v; want the database's Duplicate", res, err)
					}
				}
				if n := markerCount(t, client, prefix); n != 0 {
					t.Fatalf("%d markers after Duplicate answers, want 0", n)
				}
				if st := fp.Stats(); st.MarkerWrites != 0 || st.Misses != 2 {
					t.Fatalf("stats = %+v, want 2 misses and no marker writes", st)
				}

				// The delivery whose own commit succeeded writes the marker.
				req2 := dedup.Request{Group: "g", Key: "k2"}
				if res, err := fp.Process(ctx, req2, fn); err != nil || res.Outcome != dedup.Processed {
					t.Fatalf("first delivery: %+v, %v", res, err)
				}
				if n := markerCount(t, client, prefix); n != 1 {
					t.Fatalf("%d markers after a processed delivery, want 1", n)
				}
				if res, err := fp.Process(ctx, req2, fn); err != nil || !res.FastPath {
					t.Fatalf("duplicate after the marker: %+v, %v; want a fast-path Duplicate", res, err)
				}
				if runs != 2 {
					t.Fatalf("fn ran %d times, want 2", runs)
				}
			})
		}
	}
}
