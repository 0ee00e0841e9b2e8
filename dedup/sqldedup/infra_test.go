package sqldedup_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// mysqlDatabases lists MariaDB with every DSN variant.
func mysqlDatabases() []testenv.DB {
	var out []testenv.DB
	for _, d := range databases() {
		if d.Dialect == "mysql" {
			out = append(out, d)
		}
	}
	return out
}

// waitForInsert waits until a statement inserting into table is running on
// the server: the copy is inside its insert, waiting for the row lock.
func waitForInsert(t *testing.T, admin *gorm.DB, table string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "a copy's dedup insert to wait on the row lock", func() bool {
		var n int64
		err := admin.Raw("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE ?",
			"%INSERT INTO "+table+" %").Scan(&n).Error
		if err != nil {
			t.Fatalf("process list: %v", err)
		}
		return n > 0
	})
}

// TestMySQLCopyWaitsForFirstDelivery: the dedup insert's duplicate branch
// (ON DUPLICATE KEY UPDATE status = LAST_INSERT_ID(status)) waits for the
// row lock of a first delivery in flight, then sees its outcome: a
// duplicate once it committed, a first delivery once it rolled back. On
// every DSN variant.
func TestMySQLCopyWaitsForFirstDelivery(t *testing.T) {
	for _, d := range mysqlDatabases() {
		for _, firstFails := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/first-fails=%v", d.Name, firstFails), func(t *testing.T) {
				db := d.Open(t)
				s := newStore(t, db, sqldedup.Config{})
				r := dedup.Request{Group: "g", Key: "held"}
				started, release := make(chan struct{}), make(chan struct{})
				firstDone := make(chan error, 1)
				go func() {
					_, err := s.Process(context.Background(), r, func(ctx context.Context) error {
						close(started)
						<-release
						if firstFails {
							return errors.New("first delivery fails")
						}
						return nil
					})
					firstDone <- err
				}()
				<-started
				type result struct {
					res dedup.Result
					err error
				}
				copyDone := make(chan result, 1)
				ran := false
				go func() {
					res, err := s.Process(context.Background(), r, func(context.Context) error { ran = true; return nil })
					copyDone <- result{res, err}
				}()
				waitForInsert(t, d.Open(t), s.Table("dedup"))
				select {
				case c := <-copyDone:
					t.Fatalf("the copy returned %s, %v while the first delivery held the key", c.res.Outcome, c.err)
				default:
				}
				close(release)
				if err := <-firstDone; (err != nil) != firstFails {
					t.Fatalf("first delivery: %v", err)
				}
				c := <-copyDone
				want := dedup.Duplicate
				if firstFails {
					want = dedup.Processed
				}
				if c.err != nil || c.res.Outcome != want || ran != firstFails {
					t.Fatalf("copy: %s, %v, handler ran %v; want %s", c.res.Outcome, c.err, ran, want)
				}
			})
		}
	}
}

// TestMariaDBDeadlockIsNotAHandlerFailure: a first delivery rolls back while
// its copies wait on the key's row lock; InnoDB then picks deadlock victims
// among the copies. Each victim's run is retried in place: no copy returns
// an error (a failed attempt for the consumer), exactly one processes and
// the others are duplicates.
func TestMariaDBDeadlockIsNotAHandlerFailure(t *testing.T) {
	for _, d := range mysqlDatabases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			admin := d.Open(t)
			const copies = 8
			var errs []error
			for round := 0; round < 20 && s.ConflictRetries() == 0; round++ {
				r := dedup.Request{Group: "g", Key: fmt.Sprintf("deadlock-%d", round)}
				started, release := make(chan struct{}), make(chan struct{})
				firstDone := make(chan error, 1)
				go func() {
					_, err := s.Process(context.Background(), r, func(context.Context) error {
						close(started)
						<-release
						return errors.New("first delivery fails")
					})
					firstDone <- err
				}()
				<-started
				var (
					wg       sync.WaitGroup
					mu       sync.Mutex
					outcomes = map[dedup.Outcome]int{}
				)
				for i := 0; i < copies; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						res, err := s.Process(context.Background(), r, func(context.Context) error { return nil })
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							errs = append(errs, err)
							return
						}
						outcomes[res.Outcome]++
					}()
				}
				testenv.Eventually(t, 20*time.Second, "every copy to wait on the row lock", func() bool {
					var n int64
					admin.Raw("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE ?",
						"%INSERT INTO "+s.Table("dedup")+" %").Scan(&n)
					return n >= copies
				})
				close(release)
				<-firstDone
				wg.Wait()
				if len(errs) > 0 {
					t.Fatalf("round %d: %d copies failed, first: %v", round, len(errs), errs[0])
				}
				if outcomes[dedup.Processed] != 1 || outcomes[dedup.Duplicate] != copies-1 {
					t.Fatalf("round %d: outcomes %v, want 1 processed and %d duplicates", round, outcomes, copies-1)
				}
			}
			if s.ConflictRetries() == 0 {
				t.Fatal("no deadlock in 20 rounds: the test proved nothing")
			}
			t.Logf("%d runs retried after a deadlock; 0 errors returned", s.ConflictRetries())
		})
	}
}

// TestPostgresSerializationFailureIsRetried: two deliveries (different
// keys) whose SERIALIZABLE transactions read, then update, the same row:
// the second updater gets a serialization failure (40001). Its run is
// retried in place, so both succeed and both increments count.
func TestPostgresSerializationFailureIsRetried(t *testing.T) {
	db := testenv.OpenPostgres(t)
	s := newStore(t, db, sqldedup.Config{TxOptions: &sql.TxOptions{Isolation: sql.LevelSerializable}})
	counter := s.Table("dedup")[:len(s.Table("dedup"))-len("dedup")] + "counter"
	if err := db.Exec("CREATE TABLE " + counter + " (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO " + counter + " VALUES (1, 0)").Error; err != nil {
		t.Fatal(err)
	}
	var barrier sync.WaitGroup
	barrier.Add(2)
	var (
		mu   sync.Mutex
		runs int
	)
	handler := func(ctx context.Context) error {
		tx := dedup.Tx(ctx)
		var v int
		if err := tx.Raw("SELECT v FROM " + counter + " WHERE id = 1").Scan(&v).Error; err != nil {
			return err
		}
		mu.Lock()
		runs++
		first := runs <= 2
		mu.Unlock()
		if first {
			// Both first runs have read before either writes.
			barrier.Done()
			barrier.Wait()
		}
		return tx.Exec("UPDATE "+counter+" SET v = ? WHERE id = 1", v+1).Error
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Process(context.Background(), dedup.Request{Group: "g", Key: fmt.Sprintf("ser-%d", i)}, handler)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if s.ConflictRetries() == 0 {
		t.Fatal("no serialization failure: the test proved nothing")
	}
	var v int
	db.Raw("SELECT v FROM " + counter + " WHERE id = 1").Scan(&v)
	if v != 2 {
		t.Fatalf("counter = %d, want 2", v)
	}
}

// TestCutStoreIsUnavailable: a store behind a TCP proxy that is cut, in
// each mode and at each point (before the transaction, or while the
// handler runs so that COMMIT fails), returns an error that
// dedup.IsInfrastructure reports as dedup.ErrUnavailable, never a
// handler failure; after the link is restored the key is processed once.
func TestCutStoreIsUnavailable(t *testing.T) {
	type server struct {
		name string
		open func(t *testing.T, addr string) *gorm.DB
		addr func(t testing.TB) string
	}
	servers := []server{
		{"postgres", func(t *testing.T, addr string) *gorm.DB {
			return openVia(t, postgres.Open(testenv.PostgresDSNVia(t, addr)))
		}, testenv.PostgresAddr},
		{"mysql", func(t *testing.T, addr string) *gorm.DB {
			return openVia(t, mysql.Open(testenv.MySQLDSNVia(t, addr)))
		}, testenv.MySQLAddr},
	}
	for _, sv := range servers {
		for _, mode := range []sqldedup.Mode{sqldedup.Transactional, sqldedup.Lease} {
			for _, plain := range []bool{false, true} {
				if plain && mode == sqldedup.Lease {
					continue
				}
				name := sv.name + "/" + mode.String()
				if plain {
					name += "-plain-begin"
				}
				t.Run(name, func(t *testing.T) {
					proxy := testenv.NewProxy(t, sv.addr(t))
					db := sv.open(t, proxy.Addr())
					cfg := sqldedup.Config{Mode: mode}
					if plain {
						cfg = sqldedup.WithoutFastBegin(cfg)
					}
					s := newStore(t, db, cfg)
					ctx := context.Background()

					// Cut while the handler runs: the commit (or the lease's
					// mark) cannot reach the server.
					r := dedup.Request{Group: "g", Key: "cut-in-handler"}
					_, err := s.Process(ctx, r, func(context.Context) error { proxy.Cut(); return nil })
					if !errors.Is(err, dedup.ErrUnavailable) {
						t.Fatalf("cut while the handler ran: %v, want dedup.ErrUnavailable", err)
					}
					// Cut before the delivery.
					_, err = s.Process(ctx, dedup.Request{Group: "g", Key: "cut-before"}, func(context.Context) error {
						t.Error("handler ran without a store")
						return nil
					})
					if !errors.Is(err, dedup.ErrUnavailable) || !dedup.IsInfrastructure(err) {
						t.Fatalf("cut before: %v, want dedup.ErrUnavailable", err)
					}
					proxy.Restore()
					testenv.Eventually(t, 20*time.Second, "the store to answer again", func() bool {
						_, err := s.Now(ctx)
						return err == nil
					})
					if mode == sqldedup.Lease {
						return // the cut claim stays until its lease expires
					}
					res, err := s.Process(ctx, r, func(context.Context) error { return nil })
					if err != nil || res.Outcome != dedup.Processed {
						t.Fatalf("after restore: %s, %v; want processed", res.Outcome, err)
					}
				})
			}
		}
	}
}

func openVia(t *testing.T, dialector gorm.Dialector) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

// TestMySQLDeadlockInHandlerIsRetriedWhole: two handlers lock two rows in
// opposite order and deadlock; InnoDB rolls the victim's whole transaction
// back (the dedup row with it). The victim's handler swallows the error and
// writes on: that write must not run outside the transaction (where it
// would commit on its own), and the delivery must not be acknowledged
// without its dedup row. The victim's run is retried in place: each key
// ends with one effect and a dedup row.
func TestMySQLDeadlockInHandlerIsRetriedWhole(t *testing.T) {
	for _, d := range mysqlDatabases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			base := s.Table("")
			if err := db.Exec("CREATE TABLE " + base + "locks (id INTEGER PRIMARY KEY, v INTEGER NOT NULL) ENGINE=InnoDB").Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("CREATE TABLE " + base + "effects (k VARCHAR(64) NOT NULL) ENGINE=InnoDB").Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("INSERT INTO " + base + "locks VALUES (0, 0), (1, 0)").Error; err != nil {
				t.Fatal(err)
			}
			var barrier sync.WaitGroup
			barrier.Add(2)
			var mu sync.Mutex
			runs := map[int]int{}
			var swallowed []error
			handler := func(i int, key string) dedup.Func {
				return func(ctx context.Context) error {
					tx := dedup.Tx(ctx)
					mu.Lock()
					runs[i]++
					first := runs[i] == 1
					mu.Unlock()
					if err := tx.Exec("UPDATE "+base+"locks SET v = v + 1 WHERE id = ?", i).Error; err != nil {
						return err
					}
					if first {
						barrier.Done()
						barrier.Wait()
					}
					if err := tx.Exec("UPDATE "+base+"locks SET v = v + 1 WHERE id = ?", 1-i).Error; err != nil {
						mu.Lock()
						swallowed = append(swallowed, err)
						mu.Unlock()
					}
					_ = tx.Exec("INSERT INTO "+base+"effects (k) VALUES (?)", key).Error
					return nil
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i := 0; i < 2; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := fmt.Sprintf("k%d", i)
					_, errs[i] = s.Process(context.Background(), dedup.Request{Group: "g", Key: key}, handler(i, key))
				}()
			}
			wg.Wait()
			if len(swallowed) == 0 {
				t.Fatal("no deadlock in the handlers: the test proved nothing")
			}
			for i, err := range errs {
				if err != nil {
					t.Fatalf("delivery %d: %v", i, err)
				}
			}
			for i := 0; i < 2; i++ {
				key := fmt.Sprintf("k%d", i)
				var n int64
				db.Raw("SELECT COUNT(*) FROM "+base+"effects WHERE k = ?", key).Scan(&n)
				if n != 1 {
					t.Errorf("key %s: %d effects, want 1", key, n)
				}
				res, err := s.Process(context.Background(), dedup.Request{Group: "g", Key: key}, func(context.Context) error { return nil })
				if err != nil || res.Outcome != dedup.Duplicate {
					t.Errorf("redelivery of %s: %s, %v; want duplicate (the dedup row must exist)", key, res.Outcome, err)
				}
			}
		})
	}
}

// TestMariaDBBatchDeadlockIsRetried: as TestMariaDBDeadlockIsNotAHandlerFailure,
// with the copies arriving in batches (ProcessBatch) next to keys of their
// own: the deadlock victims are retried in place, no batch fails, the held
// key is processed once and every batch's own key once.
func TestMariaDBBatchDeadlockIsRetried(t *testing.T) {
	for _, d := range mysqlDatabases() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			s := newStore(t, db, sqldedup.Config{})
			admin := d.Open(t)
			const copies = 8
			for round := 0; round < 20 && s.ConflictRetries() == 0; round++ {
				held := fmt.Sprintf("held-%d", round)
				started, release := make(chan struct{}), make(chan struct{})
				firstDone := make(chan error, 1)
				go func() {
					_, err := s.Process(context.Background(), dedup.Request{Group: "g", Key: held}, func(context.Context) error {
						close(started)
						<-release
						return errors.New("first delivery fails")
					})
					firstDone <- err
				}()
				<-started
				var (
					wg        sync.WaitGroup
					mu        sync.Mutex
					errs      []error
					heldRuns  int
					ownByCopy = map[int]dedup.Outcome{}
				)
				for i := 0; i < copies; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						reqs := []dedup.Request{{Group: "g", Key: held}, {Group: "g", Key: fmt.Sprintf("own-%d-%d", round, i)}}
						out, err := s.ProcessBatch(context.Background(), reqs, func(context.Context, []int) error { return nil })
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							errs = append(errs, err)
							return
						}
						if out[0] == dedup.Processed {
							heldRuns++
						}
						ownByCopy[i] = out[1]
					}()
				}
				testenv.Eventually(t, 20*time.Second, "every batch to wait on the row lock", func() bool {
					var n int64
					admin.Raw("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE ?",
						"%INSERT INTO "+s.Table("dedup")+" %").Scan(&n)
					return n >= copies
				})
				close(release)
				<-firstDone
				wg.Wait()
				if len(errs) > 0 {
					t.Fatalf("round %d: %d batches failed, first: %v", round, len(errs), errs[0])
				}
				if heldRuns != 1 {
					t.Fatalf("round %d: the held key was processed by %d batches, want 1", round, heldRuns)
				}
				for i, o := range ownByCopy {
					if o != dedup.Processed {
						t.Fatalf("round %d: batch %d's own key %s", round, i, o)
					}
				}
			}
			if s.ConflictRetries() == 0 {
				t.Fatal("no deadlock in 20 rounds: the test proved nothing")
			}
		})
	}
}
