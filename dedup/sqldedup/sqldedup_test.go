package sqldedup_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/deduptest"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/sqlscript"
	"github.com/idemq/idemq/internal/testenv"
)

// newStore opens a fresh store with its own tables on db.
func newStore(t *testing.T, db *gorm.DB, cfg sqldedup.Config) *sqldedup.Store {
	t.Helper()
	if cfg.TablePrefix == "" {
		cfg.TablePrefix = testenv.TablePrefix(t)
	}
	s, err := sqldedup.New(db, cfg)
	if err != nil {
		t.Fatalf("sqldedup.New: %v", err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

// killer returns a KillConn hook for the dialect, or nil for SQLite.
func killer(d testenv.DB) func(t *testing.T, tx *gorm.DB) {
	switch d.Dialect {
	case "postgres":
		return func(t *testing.T, tx *gorm.DB) {
			var pid int
			if err := tx.Raw("SELECT pg_backend_pid()").Scan(&pid).Error; err != nil {
				t.Fatalf("backend pid: %v", err)
			}
			testenv.KillPostgresBackend(t, d.Open(t), pid)
		}
	case "mysql":
		return func(t *testing.T, tx *gorm.DB) {
			var id int64
			if err := tx.Raw("SELECT CONNECTION_ID()").Scan(&id).Error; err != nil {
				t.Fatalf("connection id: %v", err)
			}
			testenv.KillMySQLConnection(t, d.Open(t), id)
		}
	}
	return nil
}

// databases lists the databases the store is tested on: every testenv
// database, and MySQL once more per variant of the DSN settings that change
// what the server reports (clientFoundRows) or turn on the one-round-trip
// begin there (multiStatements).
func databases() []testenv.DB {
	var out []testenv.DB
	for _, d := range testenv.Databases() {
		out = append(out, d)
		if d.Dialect == "mysql" {
			out = append(out, testenv.MySQLVariants()...)
		}
	}
	return out
}

func openMySQL(t testing.TB, dsn string) *gorm.DB {
	db, err := gorm.Open(mysql.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("open mysql: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

// subject builds a conformance subject for a SQL store on d; with
// checkDoneFirst its store reads a key's row before opening a transaction
// (Config.CheckDoneFirst).
func subject(t *testing.T, d testenv.DB, mode sqldedup.Mode, slowBegin bool, checkDoneFirst ...bool) deduptest.Subject {
	db := d.Open(t)
	prefix := testenv.TablePrefix(t)
	// A lease long enough that 32 copies of one key queueing for the pool's
	// connections on a loaded 2-core machine still renew in time; the cases
	// that need a lease to expire use ShortLease.
	cfg := sqldedup.Config{Mode: mode, TablePrefix: prefix, LeaseDuration: 5 * time.Second, CleanupBatch: 4}
	if slowBegin {
		cfg = sqldedup.WithoutFastBegin(cfg)
	}
	cfg.CheckDoneFirst = len(checkDoneFirst) > 0 && checkDoneFirst[0]
	s := newStore(t, db, cfg)
	wantFast := map[string]string{"sqlite": "sqlite", "postgres": "postgres",
		"mysql-multistatements": "mysql", "mysql-foundrows-multistatements": "mysql"}[d.Name]
	if slowBegin || mode == sqldedup.Lease {
		wantFast = ""
	}
	if mode == sqldedup.Transactional && s.FastBegin() != wantFast {
		t.Fatalf("store on %s uses fast begin %q, want %q", d.Name, s.FastBegin(), wantFast)
	}
	sub := deduptest.Subject{
		Store:  s,
		Mode:   cfg.Mode, // the store's own mode: one type, dedup.Mode
		DB:     db,
		Prefix: prefix,
		Ledger: s,
		Cleanup: func(ctx context.Context) (int64, error) {
			return s.Cleanup(ctx)
		},
		Backdate: func(t *testing.T, group, key string, age time.Duration) {
			err := db.Exec("UPDATE "+s.Table("dedup")+" SET created_at = created_at - ? WHERE consumer_group = ? AND dedup_key = ?",
				age.Milliseconds(), group, key).Error
			if err != nil {
				t.Fatalf("backdate: %v", err)
			}
		},
		Keep: dedup.Retention{}.WithDefaults().Keep,
		Unsupported: map[string]string{
			// TestConformanceWithRedisFastPath runs the suite with Redis.
			"RedisCutStillDedups": "no Redis fast path in front of the bare SQL store",
		},
	}
	if d.Dialect == "sqlite" {
		const inProcess = "SQLite runs in process: there is no server connection to kill"
		sub.Unsupported["ConnectionKilledMidTransaction"] = inProcess
		sub.Unsupported["CommitOnKilledConnectionNotAcked"] = inProcess
	}
	if mode == sqldedup.Lease {
		sub.ShortLease = 300 * time.Millisecond
		sub.Zombie = func(t *testing.T) dedup.Store {
			return newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: prefix,
				LeaseDuration: sub.ShortLease, RenewInterval: -1})
		}
		sub.Leased = leased(d, db, prefix)
	} else {
		sub.KillConn = killer(d)
	}
	return sub
}

func TestConformance(t *testing.T) {
	// The databases run side by side (each subject has its own tables or
	// server); the modes of one database run one after the other.
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			for _, mode := range []sqldedup.Mode{sqldedup.Transactional, sqldedup.Lease} {
				t.Run(mode.String(), func(t *testing.T) {
					deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
						return subject(t, d, mode, false)
					}})
				})
			}
			// The ordinary BEGIN path, which a store takes with TxOptions or a
			// MySQL DSN without multiStatements.
			t.Run("transactional-plain-begin", func(t *testing.T) {
				deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
					return subject(t, d, sqldedup.Transactional, true)
				}})
			})
			// Lease mode on SQLite with a pool of one connection, as
			// sqlitedb.Open sets it: the claims and marks of concurrent
			// deliveries share statements there (leasebatch.go).
			if d.Dialect == "sqlite" {
				one := d
				one.Open = func(t testing.TB) *gorm.DB {
					db := d.Open(t)
					sqlDB, err := db.DB()
					if err != nil {
						t.Fatal(err)
					}
					sqlDB.SetMaxOpenConns(1)
					return db
				}
				t.Run("lease-one-connection", func(t *testing.T) {
					deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
						return subject(t, one, sqldedup.Lease, false)
					}})
				})
			}
			// Duplicates of done keys answered by a read before any
			// transaction (CheckDoneFirst), on one DSN per database.
			if d.Name == d.Dialect {
				t.Run("transactional-check-done-first", func(t *testing.T) {
					deduptest.Run(t, deduptest.Harness{New: func(t *testing.T) deduptest.Subject {
						return subject(t, d, sqldedup.Transactional, false, true)
					}})
				})
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	db := testenv.OpenSQLite(t)
	cases := []struct {
		name string
		cfg  sqldedup.Config
		want error
	}{
		{"prefix with capitals", sqldedup.Config{TablePrefix: "Idemq_"}, sqldedup.ErrBadPrefix},
		{"prefix with quote", sqldedup.Config{TablePrefix: "x'; drop table y; --"}, sqldedup.ErrBadPrefix},
		{"prefix too long", sqldedup.Config{TablePrefix: "a" + strings.Repeat("b", 31)}, sqldedup.ErrBadPrefix},
		{"retention inside horizon", sqldedup.Config{Retention: dedup.Retention{Keep: time.Hour}}, dedup.ErrRetentionTooShort},
		{"retention without redrive window", sqldedup.Config{Retention: dedup.Retention{Keep: dedup.RocketMQRetryHorizon}}, dedup.ErrRetentionTooShort},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sqldedup.New(db, tc.cfg); !errors.Is(err, tc.want) {
				t.Fatalf("New error = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := sqldedup.New(nil, sqldedup.Config{}); !errors.Is(err, sqldedup.ErrNilDB) {
		t.Fatalf("New(nil) = %v", err)
	}
	if _, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Lease, LeaseDuration: time.Second, RenewInterval: 2 * time.Second}); err == nil {
		t.Fatal("renew interval longer than the lease accepted")
	}
	if _, err := sqldedup.New(db, sqldedup.Config{Retention: dedup.Retention{Keep: 30 * time.Hour}}); err != nil {
		t.Fatalf("valid retention rejected: %v", err)
	}
}

// TestPlainSQLSchema runs the store on tables created from the shipped SQL,
// not from Migrate, on every database.
func TestPlainSQLSchema(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			prefix := testenv.TablePrefix(t)
			schema, err := sqldedup.Schema(d.Dialect, prefix)
			if err != nil {
				t.Fatal(err)
			}
			// The splitter every shipped script goes through: a statement may
			// end in ";" followed by a comment.
			for _, stmt := range sqlscript.Split(schema) {
				if err := db.Exec(stmt).Error; err != nil {
					t.Fatalf("plain SQL failed: %v\n%s", err, stmt)
				}
			}
			s, err := sqldedup.New(db, sqldedup.Config{TablePrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			r := dedup.Request{Group: "g", Key: "Order:1"}
			for i, want := range []dedup.Outcome{dedup.Processed, dedup.Duplicate} {
				res, err := s.Process(context.Background(), r, func(context.Context) error { return nil })
				if err != nil || res.Outcome != want {
					t.Fatalf("delivery %d: %v %v, want %s", i, res.Outcome, err, want)
				}
			}
			// Keys are compared byte for byte: no case folding, no
			// trailing-space padding.
			for _, k := range []string{"order:1", "Order:1 "} {
				res, err := s.Process(context.Background(), dedup.Request{Group: "g", Key: k}, func(context.Context) error { return nil })
				if err != nil || res.Outcome != dedup.Processed {
					t.Fatalf("key %q: %v %v, want processed", k, res.Outcome, err)
				}
			}
		})
	}
}

func TestSchemaRejectsBadInput(t *testing.T) {
	if _, err := sqldedup.Schema("oracle", "idemq_"); !errors.Is(err, sqldedup.ErrUnsupportedDialect) {
		t.Fatalf("Schema(oracle) = %v", err)
	}
	if _, err := sqldedup.Schema("sqlite", "1bad"); !errors.Is(err, sqldedup.ErrBadPrefix) {
		t.Fatalf("Schema(bad prefix) = %v", err)
	}
}

// TestLeaseRenewal proves that a lease outlives a handler longer than the
// lease while it is renewed, and that losing the key cancels the handler.
func TestLeaseRenewal(t *testing.T) {
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			// A lease long enough that a renewal round trip on a loaded
			// machine is confirmed before the handler's deadline (4/5 of
			// the lease after the last confirmed send).
			s := newStore(t, db, sqldedup.Config{Mode: sqldedup.Lease, LeaseDuration: time.Second, RenewInterval: 100 * time.Millisecond})
			ctx := context.Background()
			r := dedup.Request{Group: "g", Key: "renewed"}
			started := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				_, err := s.Process(ctx, r, func(ctx context.Context) error {
					close(started)
					select {
					case <-time.After(3 * time.Second):
						return nil
					case <-ctx.Done():
						return context.Cause(ctx)
					}
				})
				done <- err
			}()
			<-started
			time.Sleep(2 * time.Second) // twice the lease
			res, err := s.Process(ctx, r, func(context.Context) error { return errors.New("ran while leased") })
			if err != nil || res.Outcome != dedup.Busy {
				t.Fatalf("second delivery during a renewed lease: %v %v, want busy", res.Outcome, err)
			}
			if err := <-done; err != nil {
				t.Fatalf("renewed handler: %v", err)
			}

			// Another owner takes the key (as after a takeover): the next
			// renewal finds it gone and cancels the handler.
			r2 := dedup.Request{Group: "g", Key: "stolen"}
			started2 := make(chan struct{})
			go func() {
				_, err := s.Process(ctx, r2, func(ctx context.Context) error {
					close(started2)
					<-ctx.Done()
					return context.Cause(ctx)
				})
				done <- err
			}()
			<-started2
			if err := db.Exec("UPDATE "+s.Table("dedup")+" SET owner = 'someone-else' WHERE dedup_key = ?", "stolen").Error; err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, dedup.ErrLeaseLost) {
					t.Fatalf("handler ended with %v, want ErrLeaseLost", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("handler not cancelled after losing its lease")
			}
			var owner string
			db.Raw("SELECT owner FROM "+s.Table("dedup")+" WHERE dedup_key = ?", "stolen").Scan(&owner)
			if owner != "someone-else" {
				t.Fatalf("the loser released or overwrote the new owner's claim (owner %q)", owner)
			}
		})
	}
}

// TestStaleAttempts proves that a failure nobody retried is reported once
// it is older than the threshold, and that success and burial remove it.
func TestStaleAttempts(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			ctx := context.Background()
			for _, k := range []string{"lost", "retried", "buried"} {
				if _, err := s.RecordFailure(ctx, "g", k, 1, errors.New("boom")); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Exec("UPDATE "+s.Table("attempts")+" SET last_at = last_at - ?", time.Hour.Milliseconds()).Error; err != nil {
				t.Fatal(err)
			}
			// "retried" came back (and failed again) just now; "buried" went
			// to the dead letters.
			if _, err := s.RecordFailure(ctx, "g", "retried", 2, errors.New("boom again")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Bury(ctx, &dedup.DeadLetter{Group: "g", Key: "buried", Reason: "boom"}); err != nil {
				t.Fatal(err)
			}
			stale, err := s.StaleAttempts(ctx, 30*time.Minute, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(stale) != 1 || stale[0].Key != "lost" || stale[0].Count != 1 || stale[0].LastError != "boom" {
				t.Fatalf("stale = %+v, want only the lost key", stale)
			}
			if err := s.ClearAttempts(ctx, "g", "lost"); err != nil {
				t.Fatal(err)
			}
			if stale, _ := s.StaleAttempts(ctx, 30*time.Minute, 10); len(stale) != 0 {
				t.Fatalf("stale after clear = %+v", stale)
			}
		})
	}
}

// On MySQL without the DSN settings for the shared round trip, New says so
// once, at Info; with them, or in lease mode, it says nothing.
func TestMySQLWithoutMultiStatementsIsLogged(t *testing.T) {
	checked := 0
	for _, d := range databases() {
		if d.Dialect != "mysql" {
			continue
		}
		db := d.Open(t)
		for _, mode := range []sqldedup.Mode{sqldedup.Transactional, sqldedup.Lease} {
			var buf bytes.Buffer
			_, err := sqldedup.New(db, sqldedup.Config{Mode: mode, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
			if err != nil {
				t.Fatal(err)
			}
			logged := strings.Contains(buf.String(), "multiStatements=true")
			want := !strings.Contains(d.Name, "multistatements") && mode == sqldedup.Transactional
			if logged != want {
				t.Errorf("%s, %s: logged %v, want %v: %q", d.Name, mode, logged, want, buf.String())
			}
			checked++
		}
	}
	if checked == 0 {
		t.Skip("no MySQL configured (IDEMQ_MYSQL_DSN)")
	}
	if checked != 8 {
		t.Fatalf("checked %d cases, want 8: the mysql database and its three variants in both modes", checked)
	}
}
