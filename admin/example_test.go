package admin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
)

// An operator finds a dead letter, redrives it with its own message ID
// through a sender (here a function that prints; in production
// admin.ProducerSender over a producer, which needs no node lease), and
// the audit log records who did it.
func Example() {
	dir, _ := os.MkdirTemp("", "idemq-admin-example-")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(filepath.Join(dir, "app.db"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	// The service's side: a payout failed for good and was dead-lettered.
	store, _ := sqldedup.New(db, sqldedup.Config{})
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}
	_, _ = store.RecordFailure(ctx, "payments", "payout-88", 1, errors.New("wallet 4711 frozen"))
	_, _ = store.Bury(ctx, &dedup.DeadLetter{Group: "payments", Key: "payout-88", MessageID: "1796604766624384436",
		Topic: "payouts", Body: []byte(`{"amount":88}`), Attempts: 1, Reason: "wallet 4711 frozen"})

	// The operator's side.
	send := func(_ context.Context, m *idemq.Message) error {
		fmt.Printf("published %s to %s: %s\n", m.ID, m.Topic, m.Body)
		return nil
	}
	adm, err := admin.New(db, admin.Config{Sender: send})
	if err != nil {
		panic(err)
	}
	if _, err := adm.Migrate(ctx, false); err != nil { // the other components' tables, the audit log among them
		panic(err)
	}
	groups, _ := adm.DeadGroups(ctx, admin.DeadFilter{})
	for _, g := range groups {
		fmt.Printf("%d dead: %s\n", g.Count, g.Signature)
	}
	ctx = admin.WithActor(ctx, "alice")
	f := admin.DeadFilter{Group: "payments", Error: "frozen"}
	dry, _ := adm.RedriveDead(ctx, f, admin.ActionConfig{DryRun: true})
	fmt.Println("would redrive:", dry.Matched)
	res, _ := adm.RedriveDead(ctx, f, admin.ActionConfig{})
	fmt.Println("redriven:", res.Done)
	key, _ := adm.Key(ctx, "payments", "payout-88")
	fmt.Println("key is now:", key.Status)
	recs, _, _ := adm.Audit(ctx, admin.AuditFilter{}, admin.Page{Newest: true})
	fmt.Printf("audit: %s %s %d (%s)\n", recs[0].Actor, recs[0].Action, recs[0].Count, recs[0].Target)
	// Output:
	// 1 dead: wallet # frozen
	// would redrive: 1
	// published 1796604766624384436 to payouts: {"amount":88}
	// redriven: 1
	// key is now: new
	// audit: alice dead.redrive 1 (group="payments" error="frozen")
}
