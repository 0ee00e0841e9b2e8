package deduptest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// liveDeadLetters returns the unredriven dead letters of (group, key).
func liveDeadLetters(t *testing.T, l dedup.Ledger, group, key string) []dedup.DeadLetter {
	t.Helper()
	list, err := l.DeadLetters(ctxT(t), dedup.DeadLetterFilter{Group: group, Limit: 1000})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	var out []dedup.DeadLetter
	for _, d := range list {
		if d.Key == key {
			out = append(out, d)
		}
	}
	return out
}

func deadLetterFor(key string) *dedup.DeadLetter {
	return &dedup.DeadLetter{Group: group, Key: key, MessageID: "m-" + key, Topic: "payouts", Tags: "redpacket",
		Keys: []string{"m-" + key}, Body: []byte("body of " + key), Properties: map[string]string{"tenant": "t1"},
		Attempts: 1, Reason: "permanent: refused"}
}

// testBuryOnce: 16 copies of one message failing permanently at the same
// moment bury it once; a later burial of the same key stores nothing and
// returns the same dead letter; the redrive publishes once, and after it a
// new failure is a new dead letter.
func testBuryOnce(t *testing.T, s Subject) {
	s.need(t, "Ledger", s.Ledger != nil)
	ctx := ctxT(t)
	key := uniqueKey("bury-once")
	const copies = 16
	ids := make([]int64, copies)
	errs := make([]error, copies)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ids[i], errs[i] = s.Ledger.Bury(ctx, deadLetterFor(key))
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Bury %d: %v", i, err)
		}
		if ids[i] != ids[0] {
			t.Fatalf("Bury returned ids %v, want one id for one message", ids)
		}
	}
	if got := liveDeadLetters(t, s.Ledger, group, key); len(got) != 1 {
		t.Fatalf("%d dead letters for one message buried by %d concurrent copies, want 1", len(got), copies)
	}
	again, err := s.Ledger.Bury(ctx, deadLetterFor(key))
	if err != nil || again != ids[0] {
		t.Fatalf("later Bury of the same key = %d, %v; want %d", again, err, ids[0])
	}
	res, err := s.Store.Process(ctx, req(group, key), func(context.Context) error { return nil })
	mustOutcome(t, res, err, dedup.Duplicate)
	if !res.Dead {
		t.Fatal("key not dead after Bury")
	}

	published := 0
	if err := s.Ledger.Redrive(ctx, ids[0], func(context.Context, *idemq.Message) error {
		published++
		return nil
	}); err != nil {
		t.Fatalf("Redrive: %v", err)
	}
	if published != 1 {
		t.Fatalf("redrive published %d times", published)
	}
	// The redriven message fails again: a new dead letter.
	id2, err := s.Ledger.Bury(ctx, deadLetterFor(key))
	if err != nil || id2 == ids[0] {
		t.Fatalf("Bury after redrive = %d, %v; want a new dead letter", id2, err)
	}
	if got := liveDeadLetters(t, s.Ledger, group, key); len(got) != 1 || got[0].ID != id2 {
		t.Fatalf("live dead letters after redrive and a new failure: %+v", got)
	}
}

// testBuryHostile: a message whose fields a database cannot store as they
// are (NUL and invalid UTF-8 in the message ID, topic, tags, keys,
// properties and reason; a 10 MB body) is still buried, once, with what can
// be stored; the dead letter says it is incomplete and refuses a redrive.
func testBuryHostile(t *testing.T, s Subject) {
	s.need(t, "Ledger", s.Ledger != nil)
	ctx := ctxT(t)
	key := uniqueKey("bury-hostile")
	body := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16) // 10 MiB
	sum := sha256.Sum256(body)
	dl := &dedup.DeadLetter{
		Group: group, Key: key,
		MessageID:  "m-\x00-\xff-" + key,
		Topic:      "top\x00ic",
		Tags:       "t\xffag",
		Keys:       []string{"k\x00", "k\xfe"},
		Body:       body,
		Properties: map[string]string{"p\xff": "v\x00", "tenant": "t1"},
		Attempts:   2,
		Reason:     "permanent: bad \x00 input \xff",
	}
	id, err := s.Ledger.Bury(ctx, dl)
	if err != nil {
		t.Fatalf("Bury of a hostile message: %v", err)
	}
	got, err := s.Ledger.DeadLetter(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Truncated || len(got.Body) != dedup.MaxDeadLetterBody || !bytes.Equal(got.Body, body[:dedup.MaxDeadLetterBody]) ||
		got.BodySize != int64(len(body)) || got.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("dead letter: truncated %v, body %d bytes, size %d, sha256 %s", got.Truncated, len(got.Body), got.BodySize, got.BodySHA256)
	}
	if !strings.Contains(got.Reason, "permanent: bad") || !strings.Contains(got.Reason, "body cut") ||
		!strings.Contains(got.Reason, "message ID") || got.Properties["tenant"] != "t1" || got.Group != group || got.Key != key {
		t.Fatalf("dead letter does not say what was altered, or lost what could be kept: %+v", got.Reason)
	}
	if again, err := s.Ledger.Bury(ctx, dl); err != nil || again != id {
		t.Fatalf("second Bury = %d, %v; want %d", again, err, id)
	}
	res, err := s.Store.Process(ctx, req(group, key), func(context.Context) error { return nil })
	mustOutcome(t, res, err, dedup.Duplicate)
	if !res.Dead {
		t.Fatal("hostile key not dead after Bury")
	}
	err = s.Ledger.Redrive(ctx, id, func(context.Context, *idemq.Message) error {
		t.Error("an incomplete dead letter was published")
		return nil
	})
	if !errors.Is(err, dedup.ErrDeadLetterIncomplete) {
		t.Fatalf("Redrive of an incomplete dead letter: %v, want ErrDeadLetterIncomplete", err)
	}

	// A clean message is stored whole, with its size and hash.
	clean := deadLetterFor(uniqueKey("bury-clean"))
	cid, err := s.Ledger.Bury(ctx, clean)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := s.Ledger.DeadLetter(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	csum := sha256.Sum256(clean.Body)
	if cg.Truncated || cg.BodySize != int64(len(clean.Body)) || cg.BodySHA256 != hex.EncodeToString(csum[:]) || cg.Reason != clean.Reason {
		t.Fatalf("clean dead letter: %+v", cg)
	}
}
