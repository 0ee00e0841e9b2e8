package admin_test

import (
	"testing"

	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/testenv"
)

// Two different messages that a key mapping bug gave one key have a dead
// letter each; redriving one through the outbox takes that message alone:
// the other's letter keeps waiting, to be redriven (and sent) on its own.
func TestRedriveThroughOutboxLeavesOtherMessagesOfTheKey(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			b := setup(t, d)
			a, err := admin.New(b.db, admin.Config{TablePrefix: b.prefix, Outbox: b.newOutbox(t)})
			if err != nil {
				t.Fatal(err)
			}
			bury := func(id, body string) int64 {
				t.Helper()
				n, err := b.store.Bury(b.ctx, &dedup.DeadLetter{Group: "g", Key: "order:1", MessageID: id, Topic: "orders",
					Body: []byte(body), Reason: "boom"})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			first := bury("mA", "pay 10 to alice")
			second := bury("mB", "pay 99 to bob")
			if first == second {
				t.Fatal("two different messages share one dead letter")
			}
			res, err := a.RedriveDead(b.ctx, admin.DeadFilter{IDs: []int64{second}}, admin.ActionConfig{})
			if err != nil || res.Done != 1 {
				t.Fatalf("redrive = %+v, %v", res, err)
			}
			if n, err := a.CountDead(b.ctx, admin.DeadFilter{IDs: []int64{first}}); err != nil || n != 1 {
				t.Fatalf("the other message's dead letter: waiting %d, %v; want 1 (else it is lost)", n, err)
			}
		})
	}
}
