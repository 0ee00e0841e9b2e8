package redisdedup_test

import (
	"context"
	"testing"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestFastPathCrashLosesNoMessage replays, on a private MariaDB that the
// test kills with SIGKILL, the crash that used to lose a message:
//
//  1. Delivery A commits its dedup row and its effect. Its consumer never
//     writes a marker: it dies, or its commit had not returned, when the
//     database dies.
//  2. Duplicate B goes through the fast path; the database, which already
//     shows A's row, answers Duplicate.
//  3. mariadbd is killed before A's commit reached the disk (the server
//     runs with innodb_flush_log_at_trx_commit=0, which widens to seconds
//     the window InnoDB always has between showing a commit and making it
//     durable), and restarted: A's row and effect are gone.
//  4. A is redelivered through the fast path. It must be processed: a
//     marker written from B's Duplicate answer would swallow it, and the
//     message would be lost.
func TestFastPathCrashLosesNoMessage(t *testing.T) {
	srv := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	ctx := context.Background()
	client := testenv.NewRedis(t)
	keyPrefix := testenv.KeyPrefix(t)
	tablePrefix := testenv.TablePrefix(t)
	effects := tablePrefix + "effects"

	// The schema is made durable first; only the deliveries run with the
	// lax flush setting.
	db := srv.Open(t, "")
	store := crashStore(t, db, tablePrefix)
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("CREATE TABLE " + effects + " (k VARCHAR(191) NOT NULL PRIMARY KEY) ENGINE=InnoDB").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 0").Error; err != nil {
		t.Fatal(err)
	}

	effect := func(key string) dedup.Func {
		return func(ctx context.Context) error {
			return dedup.Tx(ctx).Exec("INSERT INTO "+effects+" (k) VALUES (?)", key).Error
		}
	}
	req := dedup.Request{Group: "g", Key: "order:1", Fingerprint: dedup.Fingerprint([]byte("pay 10"))}

	// 1. A commits, and writes no marker.
	if res, err := store.Process(ctx, req, effect(req.Key)); err != nil || res.Outcome != dedup.Processed {
		t.Fatalf("delivery A: %+v, %v", res, err)
	}
	// 2. B is a duplicate, answered by the database through the fast path.
	fp := newFastPath(t, store, client, keyPrefix)
	res, err := fp.Process(ctx, req, func(context.Context) error {
		t.Error("duplicate B ran the handler")
		return nil
	})
	if err != nil || res.Outcome != dedup.Duplicate || res.FastPath {
		t.Fatalf("duplicate B: %+v, %v; want the database's Duplicate", res, err)
	}

	// 3. The database dies and comes back without A's commit.
	srv.Kill(t)
	srv.Start(t)
	db2 := srv.Open(t, "")
	var n int64
	if err := db2.Raw("SELECT COUNT(*) FROM "+store.Table("dedup")+" WHERE dedup_key = ?", req.Key).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("A's dedup row survived the crash: the test did not reproduce the lost commit and proved nothing")
	}

	// 4. A's redelivery, through a fast path on the same Redis keys.
	fp2 := newFastPath(t, crashStore(t, db2, tablePrefix), client, keyPrefix)
	ran := 0
	res, err = fp2.Process(ctx, req, func(ctx context.Context) error {
		ran++
		return effect(req.Key)(ctx)
	})
	if err != nil {
		t.Fatalf("redelivery of A: %v", err)
	}
	if res.Outcome != dedup.Processed || ran != 1 {
		t.Fatalf("redelivery of A: %+v, handler ran %d times; want Processed once (else the message is lost)", res, ran)
	}
	if err := db2.Raw("SELECT COUNT(*) FROM "+effects+" WHERE k = ?", req.Key).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d effects after the redelivery, want 1", n)
	}
}

func crashStore(t *testing.T, db *gorm.DB, prefix string) *sqldedup.Store {
	t.Helper()
	s, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Transactional, TablePrefix: prefix, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
