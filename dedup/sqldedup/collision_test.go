package sqldedup_test

import (
	"context"
	"testing"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// TestBuryKeepsEveryMessageOfACollidingKey: different messages that a key
// mapping bug gives one dedup key are each kept, never acknowledged in
// silence. Copies of one message (same message ID, or same body) share a
// dead letter; a different message under the dead key is reported as a
// payload mismatch (so that middleware buries it too) and gets its own
// dead letter; redriving one message publishes it alone and leaves the
// other's dead letter waiting.
func TestBuryKeepsEveryMessageOfACollidingKey(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) {
			s := newStore(t, d.Open(t), sqldedup.Config{})
			ctx := context.Background()
			bury := func(id, body string) int64 {
				t.Helper()
				n, err := s.Bury(ctx, &dedup.DeadLetter{Group: "g", Key: "order:1", MessageID: id, Body: []byte(body), Reason: "boom"})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			a := bury("mA", "pay 10 to alice")
			if twin := bury("mA", "pay 10 to alice"); twin != a {
				t.Fatalf("a copy of message A got dead letter %d, want A's %d", twin, a)
			}
			if resent := bury("mA2", "pay 10 to alice"); resent != a {
				t.Fatalf("message A re-sent under another ID got dead letter %d, want A's %d", resent, a)
			}

			// B maps to the same key: the key is dead, but B is not A.
			called := false
			res, err := s.Process(ctx, dedup.Request{Group: "g", Key: "order:1", MessageID: "mB",
				Fingerprint: dedup.Fingerprint([]byte("pay 99 to bob"))}, func(context.Context) error { called = true; return nil })
			if err != nil || called || res.Outcome != dedup.Duplicate || !res.Dead {
				t.Fatalf("B under A's dead key: %+v, %v, handler called %v; want a dead duplicate", res, err, called)
			}
			if !res.Mismatch {
				t.Fatal("B under A's dead key is not reported as a payload mismatch: it would be acknowledged and lost")
			}
			b := bury("mB", "pay 99 to bob")
			if b == a {
				t.Fatalf("message B shares message A's dead letter %d: B's body is lost", a)
			}

			var published []string
			pub := func(_ context.Context, m *idemq.Message) error { published = append(published, m.ID); return nil }
			if err := s.Redrive(ctx, b, pub); err != nil {
				t.Fatal(err)
			}
			if len(published) != 1 || published[0] != "mB" {
				t.Fatalf("redrive of B published %v, want [mB]", published)
			}
			left, err := s.DeadLetters(ctx, dedup.DeadLetterFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 1 || left[0].ID != a {
				t.Fatalf("after B's redrive %d dead letters wait, want A's (%d) alone", len(left), a)
			}
		})
	}
}
