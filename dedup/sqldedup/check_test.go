package sqldedup_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/sqlscript"
	"github.com/idemq/idemq/internal/testenv"
)

// Check names what is missing and says to run Migrate: no tables at all, a
// table dropped, a step not applied; it passes once migrated, and for
// tables built from Schema without the migrations table.
func TestCheckSchema(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			testenv.DropTables(t, db, prefix+"dedup", prefix+"attempts", prefix+"dead_letters", prefix+"schema_migrations")
			s, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			notReady := func(what, want string) {
				t.Helper()
				err := s.Check(ctx)
				if !errors.Is(err, sqldedup.ErrSchemaNotReady) || !strings.Contains(err.Error(), "run Migrate (or idemq migrate)") ||
					!strings.Contains(err.Error(), want) {
					t.Fatalf("%s: Check = %v, want ErrSchemaNotReady naming %q and saying run Migrate", what, err, want)
				}
			}
			notReady("empty database", "table "+prefix+"dedup does not exist")

			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(ctx); err != nil {
				t.Fatalf("Check after Migrate: %v", err)
			}

			// A step the database has not recorded: the tables are behind.
			if err := db.Exec("DELETE FROM " + prefix + "schema_migrations WHERE component = 'dedup' AND version = 3").Error; err != nil {
				t.Fatal(err)
			}
			notReady("step 3 unrecorded", "migration step 0003_cleanup_time_indexes not applied")

			// A table dropped behind the store's back.
			dropped := testenv.TablePrefix(t)
			testenv.DropTables(t, db, dropped+"dedup", dropped+"attempts", dropped+"dead_letters", dropped+"schema_migrations")
			s3 := newStore(t, db, sqldedup.Config{TablePrefix: dropped})
			if err := db.Migrator().DropTable(dropped + "dead_letters"); err != nil {
				t.Fatal(err)
			}
			s = s3
			notReady("table dropped", "table "+dropped+"dead_letters does not exist")

			// Tables built from Schema, with no migrations table, pass.
			other := testenv.TablePrefix(t)
			testenv.DropTables(t, db, other+"dedup", other+"attempts", other+"dead_letters")
			script, err := sqldedup.Schema(d.Dialect, other)
			if err != nil {
				t.Fatal(err)
			}
			sqlDB, err := db.DB()
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range sqlscript.Split(script) {
				if _, err := sqlDB.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			s2, err := sqldedup.New(db, sqldedup.Config{TablePrefix: other})
			if err != nil {
				t.Fatal(err)
			}
			if err := s2.Check(ctx); err != nil {
				t.Fatalf("Check of tables built from Schema: %v", err)
			}
		})
	}
}

// StartRetention runs the janitor at once: a done row past retention
// disappears; its metrics are registered, and a second store of the
// process registering the same names is not an error.
func TestStartRetention(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := context.Background()
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			testenv.DropTables(t, db, prefix+"dedup", prefix+"attempts", prefix+"dead_letters", prefix+"schema_migrations")
			s := newStore(t, db, sqldedup.Config{
				TablePrefix: prefix,
				Retention:   dedup.Retention{Keep: 3 * time.Millisecond, RetryHorizon: time.Millisecond, RedriveWindow: time.Millisecond},
			})
			if _, err := s.Process(ctx, dedup.Request{Group: "g", Key: "old"}, func(context.Context) error { return nil }); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond) // past the 3ms retention
			reg := prometheus.NewPedanticRegistry()
			rctx, cancel := context.WithCancel(ctx)
			done, err := s.StartRetention(rctx, reg)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 10*time.Second, "the expired row deleted", func() bool {
				var n int64
				db.Raw("SELECT COUNT(*) FROM " + prefix + "dedup").Scan(&n)
				return n == 0
			})
			if n := testutil.CollectAndCount(reg, "idemq_dedup_cleanup_passes_total"); n != 1 {
				t.Fatalf("janitor metrics registered %d passes series, want 1", n)
			}
			s2 := newStore(t, db, sqldedup.Config{TablePrefix: prefix})
			done2, err := s2.StartRetention(rctx, reg)
			if err != nil {
				t.Fatalf("second StartRetention on one registry: %v", err)
			}
			cancel()
			for _, ch := range []<-chan struct{}{done, done2} {
				select {
				case <-ch:
				case <-time.After(10 * time.Second):
					t.Fatal("retention did not stop after its context ended")
				}
			}
		})
	}
}
