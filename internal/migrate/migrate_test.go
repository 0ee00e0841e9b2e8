package migrate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/sqlscript"
	"github.com/idemq/idemq/internal/testenv"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Every component ships every step in every dialect, numbered without gaps.
func TestEmbeddedStepsComplete(t *testing.T) {
	for _, c := range migrate.Components {
		for _, d := range migrate.Dialects {
			steps, err := migrate.Steps(c, d)
			if err != nil {
				t.Fatalf("Steps(%s, %s): %v", c, d, err)
			}
			if len(steps) == 0 || steps[0].Version != 1 {
				t.Fatalf("Steps(%s, %s) = %d steps, want 0001 first", c, d, len(steps))
			}
			for _, s := range steps {
				if len(s.Statements("idemq_")) == 0 {
					t.Errorf("%s %04d %s: no statements", c, s.Version, d)
				}
				if strings.Contains(strings.Join(s.Statements("x_"), "\n"), "{{") {
					t.Errorf("%s %04d %s: placeholder left", c, s.Version, d)
				}
			}
		}
	}
}

func TestStepsRejectsBadTrees(t *testing.T) {
	if _, err := migrate.StepsDir("testdata/bad", "gap", "sqlite"); err == nil || !strings.Contains(err.Error(), "without gaps") {
		t.Fatalf("gap: err = %v", err)
	}
	if _, err := migrate.StepsDir("testdata/bad", "nodialect", "sqlite"); err == nil || !strings.Contains(err.Error(), "no mysql file") {
		t.Fatalf("missing dialect: err = %v", err)
	}
	if _, err := migrate.Steps("nosuch", "sqlite"); !errors.Is(err, migrate.ErrUnknownComponent) {
		t.Fatalf("unknown component: err = %v", err)
	}
	if _, err := migrate.Schema("dedup", "oracle", "idemq_"); !errors.Is(err, migrate.ErrUnsupportedDialect) {
		t.Fatalf("oracle: err = %v", err)
	}
	if _, err := migrate.Schema("dedup", "sqlite", "Bad"); !errors.Is(err, migrate.ErrBadPrefix) {
		t.Fatalf("bad prefix: err = %v", err)
	}
}

func tables(t *testing.T, db *gorm.DB, prefix string, names ...string) {
	t.Helper()
	all := []string{migrate.Table(prefix)}
	for _, n := range names {
		all = append(all, prefix+n)
	}
	testenv.DropTables(t, db, all...)
}

// A database created by the previous schema (the tables as the unversioned
// Migrate made them, with data) is adopted by step 0001 and upgraded by a
// later step; the data survives and the new column is there.
func TestUpgradeFromPreviousSchema(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := ctxT(t)
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			tables(t, db, prefix, "demo")
			// The old way: run the plain schema, no migrations table.
			v1, err := migrate.StepsDir("testdata/v1", "demo", d.Dialect)
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range sqlscript.Split(strings.ReplaceAll(v1[0].SQL, "{{prefix}}", prefix)) {
				if err := db.Exec(stmt).Error; err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Exec("INSERT INTO " + prefix + "demo (id, name) VALUES (1, 'old')").Error; err != nil {
				t.Fatal(err)
			}
			st, err := migrate.StatusDir(ctx, db, "testdata/v2", prefix, "demo")
			if err != nil {
				t.Fatal(err)
			}
			if len(st) != 2 || st[0].Applied != nil || st[1].Applied != nil {
				t.Fatalf("status before = %+v, want two pending steps", st)
			}
			dry, err := migrate.RunDir(ctx, db, "testdata/v2", prefix, migrate.Config{DryRun: true}, "demo")
			if err != nil || len(dry) != 2 {
				t.Fatalf("dry run = %v, %v; want 2 steps", dry, err)
			}
			ran, err := migrate.RunDir(ctx, db, "testdata/v2", prefix, migrate.Config{}, "demo")
			if err != nil {
				t.Fatal(err)
			}
			if len(ran) != 2 || ran[0].Version != 1 || ran[1].Version != 2 {
				t.Fatalf("ran %+v, want steps 1 and 2", ran)
			}
			var row struct {
				Name string
				Note string
			}
			if err := db.Raw("SELECT name, note FROM " + prefix + "demo WHERE id = 1").Scan(&row).Error; err != nil {
				t.Fatalf("new column: %v", err)
			}
			if row.Name != "old" || row.Note != "" {
				t.Fatalf("row = %+v", row)
			}
			again, err := migrate.RunDir(ctx, db, "testdata/v2", prefix, migrate.Config{}, "demo")
			if err != nil || len(again) != 0 {
				t.Fatalf("second run = %v, %v; want nothing to do", again, err)
			}
			st, err = migrate.StatusDir(ctx, db, "testdata/v2", prefix, "demo")
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				if s.Applied == nil || s.Modified || s.Unknown {
					t.Fatalf("status after = %+v", s)
				}
			}
			// An older program sees the newer step as unknown, and runs nothing.
			st, err = migrate.StatusDir(ctx, db, "testdata/v1", prefix, "demo")
			if err != nil {
				t.Fatal(err)
			}
			if len(st) != 2 || !st[1].Unknown {
				t.Fatalf("status from v1 = %+v, want step 2 unknown", st)
			}
		})
	}
}

// Several processes (separate pools) migrating the same prefix at once all
// succeed, and every step is applied and recorded once.
func TestConcurrentRuns(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := ctxT(t)
			prefix := testenv.TablePrefix(t)
			var dbs []*gorm.DB
			for i := 0; i < 4; i++ {
				dbs = append(dbs, d.Open(t))
			}
			if d.Name == "sqlite" {
				// Each OpenSQLite is a new file: share one pool, whose
				// connections contend as processes would.
				dbs = dbs[:1]
			}
			tables(t, dbs[0], prefix, "demo")
			var wg sync.WaitGroup
			errs := make([]error, 8)
			counts := make([]int, 8)
			start := make(chan struct{})
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					ran, err := migrate.RunDir(ctx, dbs[i%len(dbs)], "testdata/v2", prefix, migrate.Config{}, "demo")
					errs[i], counts[i] = err, len(ran)
				}()
			}
			close(start)
			wg.Wait()
			total := 0
			for i, err := range errs {
				if err != nil {
					t.Errorf("run %d: %v", i, err)
				}
				total += counts[i]
			}
			if total != 2 {
				t.Fatalf("steps applied across runs = %d, want 2 (each once)", total)
			}
			var n int64
			if err := dbs[0].Raw("SELECT COUNT(*) FROM " + migrate.Table(prefix) + " WHERE component = 'demo'").Scan(&n).Error; err != nil || n != 2 {
				t.Fatalf("recorded = %d, %v; want 2", n, err)
			}
		})
	}
}
