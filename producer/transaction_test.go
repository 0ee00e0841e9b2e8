//go:build rocketmq_norace

// Transaction-producer tests: each runs a real rocketmq-client-go
// transaction producer against the in-process test broker. They cannot run
// under -race: the client's Shutdown writes its close flag while the
// check-back and send paths read it without synchronisation (a data race
// inside rocketmq-client-go, reported in internal/client.go's Shutdown),
// which the race detector reports whenever a check-back is in flight at
// shutdown. scripts/test runs them with -tags rocketmq_norace, without
// -race. Everything idemq does around them runs under -race elsewhere.

package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/msgid"
)

type txBundle struct {
	broker *rmqtest.Broker
	db     *gorm.DB
	prefix string
	orders string // a business table: id (PK), note
}

func setupTx(t *testing.T, k testenv.DB, bcfg rmqtest.Config) *txBundle {
	t.Helper()
	db := k.Open(t)
	prefix := tablePrefix(t, db)
	orders := prefix + "orders"
	testenv.DropTables(t, db, orders)
	if err := db.Exec("CREATE TABLE " + orders + " (id VARCHAR(64) NOT NULL PRIMARY KEY, note VARCHAR(64) NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	bcfg.Topics = append(bcfg.Topics, "tx-orders")
	return &txBundle{broker: rmqtest.NewTest(t, bcfg), db: db, prefix: prefix, orders: orders}
}

func (b *txBundle) producer(t *testing.T, group string, grace time.Duration) *TransactionProducer {
	t.Helper()
	g, err := msgid.NewGenerator(msgid.FixedNode(testNode), msgid.GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewTransactionProducer(TxConfig{
		Config:      Config{NameServers: []string{b.broker.Addr()}, Group: group, IDSource: g, Retries: -1, Logger: quietLog},
		DB:          b.db,
		TablePrefix: b.prefix,
		Migrate:     true,
		CheckGrace:  grace,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

// orderCount counts business rows with id.
func (b *txBundle) orderCount(t *testing.T, id string) int64 {
	t.Helper()
	var n int64
	if err := b.db.Table(b.orders).Where("id = ?", id).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// recordCount counts tx records of a message ID.
func (b *txBundle) recordCount(t *testing.T, id string) int64 {
	t.Helper()
	var n int64
	if err := b.db.Table(b.prefix+"tx_records").Where("message_id = ?", id).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func insertOrder(table, id string) func(tx *gorm.DB) error {
	return func(tx *gorm.DB) error {
		return tx.Exec("INSERT INTO "+table+" (id, note) VALUES (?, 'paid')", id).Error
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, what, cond)
}

func TestLiveSendInTxCommit(t *testing.T) {
	for _, k := range testenv.Databases() {
		t.Run(k.Name, func(t *testing.T) {
			b := setupTx(t, k, rmqtest.Config{})
			p := b.producer(t, "txg-commit", 0)
			msg := &idemq.Message{Topic: "tx-orders", Body: []byte("order-1 paid")}
			res, err := p.SendInTx(context.Background(), msg, insertOrder(b.orders, "order-1"))
			if err != nil {
				t.Fatal(err)
			}
			if res.MessageID != msg.ID || msg.ID == "" {
				t.Fatalf("result ID %q, msg.ID %q", res.MessageID, msg.ID)
			}
			if b.orderCount(t, "order-1") != 1 || b.recordCount(t, msg.ID) != 1 {
				t.Fatal("local transaction did not commit the order and the record")
			}
			waitFor(t, "the committed message", func() bool { return len(findByID(b.broker.Messages("tx-orders"), msg.ID)) == 1 })
			if h := b.broker.HalfMessages(); len(h) != 0 {
				t.Errorf("%d half messages left", len(h))
			}
			if st := b.broker.Stats(); st.Commits != 1 || st.Rollbacks != 0 {
				t.Errorf("commits %d rollbacks %d, want 1 and 0", st.Commits, st.Rollbacks)
			}
			// The same message ID cannot commit a second time.
			_, err = p.SendInTx(context.Background(), msg, insertOrder(b.orders, "order-2"))
			if err == nil {
				t.Fatal("second SendInTx with the same ID succeeded")
			}
			if b.orderCount(t, "order-2") != 0 {
				t.Error("second local transaction committed")
			}
			waitFor(t, "the second half message to roll back", func() bool { return b.broker.Stats().Rollbacks == 1 })
			if n := len(findByID(b.broker.Messages("tx-orders"), msg.ID)); n != 1 {
				t.Errorf("%d copies delivered, want 1", n)
			}
		})
	}
}

func TestLiveSendInTxRollback(t *testing.T) {
	for _, k := range testenv.Databases() {
		t.Run(k.Name, func(t *testing.T) {
			b := setupTx(t, k, rmqtest.Config{})
			p := b.producer(t, "txg-rollback", 0)
			errDeclined := errors.New("card declined")
			msg := &idemq.Message{Topic: "tx-orders", Body: []byte("order-1")}
			_, err := p.SendInTx(context.Background(), msg, func(tx *gorm.DB) error {
				if err := insertOrder(b.orders, "order-1")(tx); err != nil {
					return err
				}
				return errDeclined
			})
			if !errors.Is(err, errDeclined) {
				t.Fatalf("err = %v, want the function's error", err)
			}
			msg2 := &idemq.Message{Topic: "tx-orders", Body: []byte("order-2")}
			_, err = p.SendInTx(context.Background(), msg2, func(tx *gorm.DB) error {
				_ = insertOrder(b.orders, "order-2")(tx)
				panic("handler bug")
			})
			if err == nil || !strings.Contains(err.Error(), "panicked") {
				t.Fatalf("panic: err = %v", err)
			}
			waitFor(t, "two rollbacks", func() bool { return b.broker.Stats().Rollbacks == 2 })
			for _, id := range []string{"order-1", "order-2"} {
				if b.orderCount(t, id) != 0 {
					t.Errorf("%s committed despite the rollback", id)
				}
			}
			for _, m := range []*idemq.Message{msg, msg2} {
				if b.recordCount(t, m.ID) != 0 {
					t.Errorf("record of %s left behind", m.ID)
				}
			}
			if n := len(b.broker.Messages("tx-orders")); n != 0 {
				t.Errorf("%d rolled-back messages delivered", n)
			}
			if h := b.broker.HalfMessages(); len(h) != 0 {
				t.Errorf("%d half messages left", len(h))
			}
		})
	}
}

// The local transaction commits but the broker never hears of it (the
// producer "crashes" before END_TRANSACTION). Another producer of the group
// settles the half message from the record, with no user code.
func TestLiveSendInTxCheckBackCommitsAfterCrash(t *testing.T) {
	for _, k := range testenv.Databases() {
		t.Run(k.Name, func(t *testing.T) {
			b := setupTx(t, k, rmqtest.Config{TransactionCheckInterval: 200 * time.Millisecond})
			a := b.producer(t, "txg-crash", 0)
			a.loseEnd = func(string) bool { return true }
			msg := &idemq.Message{Topic: "tx-orders", Body: []byte("order-9")}
			if _, err := a.SendInTx(context.Background(), msg, insertOrder(b.orders, "order-9")); err != nil {
				t.Fatal(err)
			}
			if h := b.broker.HalfMessages(); len(h) != 1 || h[0].GetProperty(idemq.PropertyMessageID) != msg.ID {
				t.Fatalf("half messages %d, want the unsettled one", len(h))
			}
			if n := len(b.broker.Messages("tx-orders")); n != 0 {
				t.Fatalf("message delivered before any commit (%d)", n)
			}
			if err := a.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			// The restarted process. rocketmq-client-go learns broker
			// addresses only from the routes of topics it sends to, so
			// the broker can reach it once it sends again.
			restarted := b.producer(t, "txg-crash", 0)
			next := &idemq.Message{Topic: "tx-orders", Body: []byte("order-10")}
			if _, err := restarted.SendInTx(context.Background(), next, insertOrder(b.orders, "order-10")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the check-back to commit", func() bool {
				return len(findByID(b.broker.Messages("tx-orders"), msg.ID)) == 1
			})
			// The second message's commit notice is one-way: SendInTx
			// returns before the broker has applied it.
			waitFor(t, "the second message's commit", func() bool {
				return len(findByID(b.broker.Messages("tx-orders"), next.ID)) == 1
			})
			st := b.broker.Stats()
			if st.TransactionChecks < 1 || st.Commits != 2 || st.Rollbacks != 0 {
				t.Errorf("stats %+v: want a check and two commits", st)
			}
			if h := b.broker.HalfMessages(); len(h) != 0 {
				t.Errorf("%d half messages left", len(h))
			}
		})
	}
}

// The producer dies after the half send, before its local transaction: no
// record ever appears, and after CheckGrace the check-back rolls back.
func TestLiveSendInTxCheckBackRollsBackWithoutRecord(t *testing.T) {
	b := setupTx(t, testenv.Databases()[0], rmqtest.Config{TransactionCheckInterval: 100 * time.Millisecond})
	p := b.producer(t, "txg-norecord", 300*time.Millisecond)
	p.crashBefore = func(string) bool { return true }
	ran := false
	msg := &idemq.Message{Topic: "tx-orders", Body: []byte("x")}
	if _, err := p.SendInTx(context.Background(), msg, func(*gorm.DB) error { ran = true; return nil }); err == nil {
		t.Fatal("SendInTx reported success without a local transaction")
	}
	if ran {
		t.Fatal("local function ran")
	}
	waitFor(t, "the check-back to roll back", func() bool { return b.broker.Stats().Rollbacks == 1 })
	if n := len(b.broker.Messages("tx-orders")); n != 0 {
		t.Errorf("%d messages delivered without a local commit", n)
	}
	if st := b.broker.Stats(); st.Commits != 0 {
		t.Errorf("%d commits", st.Commits)
	}
}

// The check-back's decision table, with a controlled clock.
func TestLiveCheckLocalTransactionDecisions(t *testing.T) {
	for _, k := range testenv.Databases() {
		t.Run(k.Name, func(t *testing.T) {
			b := setupTx(t, k, rmqtest.Config{})
			p := b.producer(t, "txg-check", time.Minute)
			now := time.Now()
			p.now = func() time.Time { return now }
			if err := b.db.Table(b.prefix + "tx_records").Create(&txRecordRow{MessageID: "1001", Topic: "t", CreatedAt: now.UTC()}).Error; err != nil {
				t.Fatal(err)
			}
			ext := func(id string, born time.Time) *primitive.MessageExt {
				m := &primitive.MessageExt{BornTimestamp: born.UnixMilli()}
				m.Topic = "t"
				if id != "" {
					m.WithProperty(idemq.PropertyMessageID, id)
				}
				return m
			}
			for _, tc := range []struct {
				name string
				msg  *primitive.MessageExt
				want primitive.LocalTransactionState
			}{
				{"record present", ext("1001", now.Add(-time.Hour)), primitive.CommitMessageState},
				{"record present, young", ext("1001", now), primitive.CommitMessageState},
				{"no record, young", ext("1002", now.Add(-30*time.Second)), primitive.UnkonwnState},
				{"no record, old", ext("1002", now.Add(-2*time.Minute)), primitive.RollbackMessageState},
				{"no idemq ID", ext("", now.Add(-time.Hour)), primitive.UnkonwnState},
			} {
				if got := (*txListener)(p).CheckLocalTransaction(tc.msg); got != tc.want {
					t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				}
			}
			// A panic in the check (here: the client handing over no
			// message) is contained and answered "unknown": the client
			// would swallow it and leave the broker without an answer.
			if got := (*txListener)(p).CheckLocalTransaction(nil); got != primitive.UnkonwnState {
				t.Errorf("panicking check: %v, want unknown", got)
			}
			if got := (*txListener)(p).ExecuteLocalTransaction(nil); got != primitive.UnkonwnState {
				t.Errorf("panicking execute: %v, want unknown", got)
			}
			// A database error is "unknown", never a rollback.
			down := k.Open(t)
			sqlDB, _ := down.DB()
			_ = sqlDB.Close()
			p.db = down
			if got := p.check(ext("1002", now.Add(-time.Hour))); got != primitive.UnkonwnState {
				t.Errorf("database down: %v, want unknown", got)
			}
		})
	}
}

// A local transaction that outlives CheckGrace/2 is rolled back, so a
// record can never appear after a check-back decided to roll back.
func TestLiveSendInTxTooSlowRollsBack(t *testing.T) {
	b := setupTx(t, testenv.Databases()[0], rmqtest.Config{})
	p := b.producer(t, "txg-slow", time.Minute)
	var mu sync.Mutex
	now := time.Now()
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	msg := &idemq.Message{Topic: "tx-orders"}
	_, err := p.SendInTx(context.Background(), msg, func(tx *gorm.DB) error {
		mu.Lock()
		now = now.Add(31 * time.Second)
		mu.Unlock()
		return insertOrder(b.orders, "slow")(tx)
	})
	if !errors.Is(err, ErrLocalTxTooSlow) {
		t.Fatalf("err = %v, want ErrLocalTxTooSlow", err)
	}
	if b.orderCount(t, "slow") != 0 || b.recordCount(t, msg.ID) != 0 {
		t.Error("slow local transaction committed")
	}
}

func TestLivePurgeTxRecords(t *testing.T) {
	for _, k := range testenv.Databases() {
		t.Run(k.Name, func(t *testing.T) {
			b := setupTx(t, k, rmqtest.Config{})
			p := b.producer(t, "txg-purge", 0)
			now := time.Now().UTC()
			var rows []txRecordRow
			for i := 0; i < 1500; i++ {
				rows = append(rows, txRecordRow{MessageID: fmt.Sprintf("old-%d", i), Topic: "t", CreatedAt: now.Add(-48 * time.Hour)})
			}
			rows = append(rows, txRecordRow{MessageID: "new", Topic: "t", CreatedAt: now})
			if err := b.db.Table(b.prefix+"tx_records").CreateInBatches(rows, 200).Error; err != nil {
				t.Fatal(err)
			}
			if _, err := p.PurgeTxRecords(context.Background(), time.Minute); err == nil {
				t.Error("a horizon below an hour was accepted")
			}
			n, err := p.PurgeTxRecords(context.Background(), 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1500 {
				t.Errorf("purged %d, want 1500", n)
			}
			if b.recordCount(t, "new") != 1 {
				t.Error("recent record purged")
			}
		})
	}
}

// tablePrefix returns a prefix unique to the test and drops its tables
// when the test ends.
func tablePrefix(t *testing.T, db *gorm.DB) string {
	t.Helper()
	p := testenv.TablePrefix(t)
	testenv.DropTables(t, db, p+"node_leases", p+"tx_records", p+"schema_migrations")
	return p
}
