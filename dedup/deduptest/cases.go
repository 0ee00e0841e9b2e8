package deduptest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

const group = "conformance-group"

func testFirstDelivery(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("first")
	res, err := s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	e.expect(t, key, 1)
}

func testDuplicate(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("dup")
	res, err := s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	for i := 0; i < 3; i++ {
		called := false
		res, err = s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
			called = true
			return e.write(ctx, key)
		})
		mustOutcome(t, res, err, dedup.Duplicate)
		if called {
			t.Fatal("handler called for a duplicate")
		}
		if res.Dead || res.Mismatch {
			t.Fatalf("plain duplicate reported dead=%v mismatch=%v", res.Dead, res.Mismatch)
		}
	}
	e.expect(t, key, 1)
}

func testGroups(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("groups")
	for _, g := range []string{"group-a", "group-b"} {
		res, err := s.Store.Process(ctxT(t), req(g, key), e.fn(key))
		mustOutcome(t, res, err, dedup.Processed)
	}
	res, err := s.Store.Process(ctxT(t), req("group-a", key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	e.expect(t, key, 2)
}

// testExactKeys: keys are compared byte for byte. Keys that a
// case-insensitive, pad-space or normalizing collation would call equal are
// different messages, and each runs once.
func testExactKeys(t *testing.T, s Subject) {
	e := newEffects(t, s)
	base := uniqueKey("exact")
	keys := []string{base + "-key", base + "-KEY", base + "-key ", base + "-caf\u00e9", base + "-cafe\u0301"}
	// Effects are recorded under ASCII labels, so that the effects table's
	// own collation cannot merge them.
	label := func(i int) string { return fmt.Sprintf("%s#%d", base, i) }
	for round, want := range []dedup.Outcome{dedup.Processed, dedup.Duplicate} {
		for i, k := range keys {
			res, err := s.Store.Process(ctxT(t), req(group, k), e.fn(label(i)))
			if err != nil || res.Outcome != want {
				t.Fatalf("round %d, key %q: got %v, %v; want %v", round, k, res.Outcome, err, want)
			}
		}
	}
	for i := range keys {
		e.expect(t, label(i), 1)
	}
}

func testConcurrent(t *testing.T, s Subject) {
	const n = 32
	e := newEffects(t, s)
	key := uniqueKey("concurrent")
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		mu       sync.Mutex
		outcomes = map[dedup.Outcome]int{}
		errs     []error
		busy     int
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
				// Hold the key long enough for every other delivery to
				// arrive while it is in flight.
				time.Sleep(50 * time.Millisecond)
				return e.write(ctx, key)
			})
			if err == nil && res.Outcome == dedup.Busy {
				// The broker would redeliver later: do so.
				res, err = settle(t, s.Store, req(group, key), e.fn(key))
				mu.Lock()
				busy++
				mu.Unlock()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			outcomes[res.Outcome]++
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d deliveries failed, first: %v", len(errs), errs[0])
	}
	if outcomes[dedup.Processed] != 1 || outcomes[dedup.Duplicate] != n-1 {
		t.Fatalf("outcomes = %v, want 1 processed and %d duplicates", outcomes, n-1)
	}
	e.expect(t, key, 1)
	t.Logf("%d deliveries: 1 processed, %d duplicates (%d of them busy first)", n, n-1, busy)
}

func testHandlerError(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("err")
	boom := errors.New("boom")
	_, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		if err := e.write(ctx, key); err != nil {
			return err
		}
		return idemq.Permanent(boom)
	})
	if !errors.Is(err, boom) || !idemq.IsPermanent(err) {
		t.Fatalf("Process error = %v, want the handler's permanent boom unchanged", err)
	}
	if s.Mode == dedup.Transactional {
		e.expect(t, key, 0)
	}
	res, err := settle(t, s.Store, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	want := 1
	if s.Mode == dedup.Lease {
		want = 2 // the failed attempt's external effect happened too
	}
	e.expect(t, key, want)
}

func testPanic(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("panic")
	func() {
		defer func() {
			if r := recover(); r != "handler exploded" {
				t.Fatalf("recovered %v, want the handler's panic re-raised", r)
			}
		}()
		_, _ = s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
			if err := e.write(ctx, key); err != nil {
				return err
			}
			panic("handler exploded")
		})
		t.Fatal("Process returned after a panic")
	}()
	want := 0
	if s.Mode == dedup.Lease {
		want = 1
	}
	e.expect(t, key, want)
	res, err := settle(t, s.Store, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	e.expect(t, key, want+1)
	res, err = s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
}

func testCancelled(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("cancel")
	ctx, cancel := context.WithCancel(ctxT(t))
	_, err := s.Store.Process(ctx, req(group, key), func(ctx context.Context) error {
		if err := e.write(ctx, key); err != nil {
			return err
		}
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Process error = %v, want context.Canceled", err)
	}
	if s.Mode == dedup.Transactional {
		e.expect(t, key, 0)
	}
	res, err := settle(t, s.Store, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
}

func testKilledConn(t *testing.T, s Subject) {
	if s.Mode != dedup.Transactional {
		t.Skip("applies to transactional stores")
	}
	s.need(t, "KillConn", s.KillConn != nil)
	e := newEffects(t, s)
	key := uniqueKey("killed")
	_, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		if err := e.write(ctx, key); err != nil {
			return err
		}
		s.KillConn(t, dedup.Tx(ctx))
		return e.write(ctx, key+":second")
	})
	if err == nil {
		t.Fatal("Process succeeded on a killed connection")
	}
	e.expect(t, key, 0)
	res, err := settle(t, s.Store, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	e.expect(t, key, 1)
}

func testLeaseTakeover(t *testing.T, s Subject) {
	if s.Mode != dedup.Lease {
		t.Skip("applies to lease-mode stores")
	}
	s.need(t, "Zombie", s.Zombie != nil)
	e := newEffects(t, s)
	key := uniqueKey("takeover")
	zombie := s.Zombie(t)
	started, release := make(chan struct{}), make(chan struct{})
	type outcome struct {
		res dedup.Result
		err error
	}
	zdone := make(chan outcome, 1)
	go func() {
		res, err := zombie.Process(context.Background(), req(group, key), func(ctx context.Context) error {
			close(started)
			<-release
			return e.write(ctx, key)
		})
		zdone <- outcome{res, err}
	}()
	<-started
	// While the zombie's lease is live, a redelivery is busy.
	res, err := s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Busy)
	if res.RetryAfter <= 0 || res.RetryAfter > s.ShortLease {
		t.Fatalf("busy RetryAfter = %s, want within (0, %s]", res.RetryAfter, s.ShortLease)
	}
	time.Sleep(s.ShortLease + 150*time.Millisecond)
	res, err = s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	close(release)
	z := <-zdone
	if !errors.Is(z.err, dedup.ErrLeaseLost) {
		t.Fatalf("zombie result %+v, %v; want dedup.ErrLeaseLost", z.res, z.err)
	}
	res, err = s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	// Both handlers ran (the documented limit of lease mode), but the
	// zombie could not record its run over its successor's.
	e.expect(t, key, 2)
}

func testZombieRelease(t *testing.T, s Subject) {
	if s.Mode != dedup.Lease {
		t.Skip("applies to lease-mode stores")
	}
	s.need(t, "Zombie", s.Zombie != nil)
	key := uniqueKey("zrelease")
	zombie := s.Zombie(t)
	zstarted, zrelease := make(chan struct{}), make(chan struct{})
	zdone := make(chan error, 1)
	go func() {
		_, err := zombie.Process(context.Background(), req(group, key), func(ctx context.Context) error {
			close(zstarted)
			<-zrelease
			return errors.New("zombie failed")
		})
		zdone <- err
	}()
	<-zstarted
	time.Sleep(s.ShortLease + 150*time.Millisecond)
	// The successor takes over and holds the key.
	sstarted, srelease := make(chan struct{}), make(chan struct{})
	sdone := make(chan error, 1)
	go func() {
		res, err := s.Store.Process(context.Background(), req(group, key), func(ctx context.Context) error {
			close(sstarted)
			<-srelease
			return nil
		})
		if err == nil && res.Outcome != dedup.Processed {
			err = errors.New("successor outcome " + res.Outcome.String())
		}
		sdone <- err
	}()
	<-sstarted
	// The zombie fails and releases: its release must not free the
	// successor's claim.
	close(zrelease)
	if err := <-zdone; err == nil || !strings.Contains(err.Error(), "zombie failed") {
		t.Fatalf("zombie error = %v", err)
	}
	res, err := s.Store.Process(ctxT(t), req(group, key), func(context.Context) error {
		t.Error("a third delivery ran while the successor held the key")
		return nil
	})
	mustOutcome(t, res, err, dedup.Busy)
	close(srelease)
	if err := <-sdone; err != nil {
		t.Fatalf("successor: %v", err)
	}
	res, err = s.Store.Process(ctxT(t), req(group, key), func(context.Context) error { return nil })
	mustOutcome(t, res, err, dedup.Duplicate)
}

func testRedisCut(t *testing.T, s Subject) {
	s.need(t, "CutRedis", s.CutRedis != nil && s.RestoreRedis != nil && s.Fallbacks != nil)
	e := newEffects(t, s)
	k1, k2 := uniqueKey("redis1"), uniqueKey("redis2")
	res, err := s.Store.Process(ctxT(t), req(group, k1), e.fn(k1))
	mustOutcome(t, res, err, dedup.Processed)
	res, err = s.Store.Process(ctxT(t), req(group, k1), e.fn(k1))
	mustOutcome(t, res, err, dedup.Duplicate)
	if !res.FastPath {
		t.Fatal("duplicate was not answered by the fast path while Redis was up")
	}
	before := s.Fallbacks()
	s.CutRedis()
	res, err = s.Store.Process(ctxT(t), req(group, k1), e.fn(k1))
	mustOutcome(t, res, err, dedup.Duplicate)
	if res.FastPath {
		t.Fatal("fast path answered while Redis was cut")
	}
	res, err = settle(t, s.Store, req(group, k2), e.fn(k2))
	mustOutcome(t, res, err, dedup.Processed)
	res, err = s.Store.Process(ctxT(t), req(group, k2), e.fn(k2))
	mustOutcome(t, res, err, dedup.Duplicate)
	if s.Fallbacks() <= before {
		t.Fatal("fallbacks were not counted while Redis was cut")
	}
	s.RestoreRedis()
	res, err = s.Store.Process(ctxT(t), req(group, k2), e.fn(k2))
	mustOutcome(t, res, err, dedup.Duplicate)
	e.expect(t, k1, 1)
	e.expect(t, k2, 1)
}

func testMismatch(t *testing.T, s Subject) {
	e := newEffects(t, s)
	key := uniqueKey("mismatch")
	r := req(group, key)
	res, err := s.Store.Process(ctxT(t), r, e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	res, err = s.Store.Process(ctxT(t), r, e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	if res.Mismatch {
		t.Fatal("same payload reported as mismatch")
	}
	other := r
	other.Fingerprint = dedup.Fingerprint([]byte("a different body"))
	res, err = s.Store.Process(ctxT(t), other, e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	if !res.Mismatch {
		t.Fatal("duplicate with a different payload not reported as mismatch")
	}
	e.expect(t, key, 1)
}

func testDeadLetter(t *testing.T, s Subject) {
	s.need(t, "Ledger", s.Ledger != nil)
	e := newEffects(t, s)
	ctx := ctxT(t)
	key := uniqueKey("dead")
	fail := errors.New("downstream refused")
	for i := 1; i <= 3; i++ {
		_, err := s.Store.Process(ctx, req(group, key), func(ctx context.Context) error { return fail })
		if !errors.Is(err, fail) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		rec, err := s.Ledger.RecordFailure(ctx, group, key, i, err)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Count != i || rec.LastError != fail.Error() || len(rec.History) != i {
			t.Fatalf("attempt %d recorded as %+v", i, rec)
		}
	}
	msg := &idemq.Message{ID: "m-" + key, Key: key, Group: group, Topic: "payouts", Tags: "redpacket",
		Keys: []string{"m-" + key}, Body: []byte(key), Properties: map[string]string{"tenant": "t1"}}
	dl := &dedup.DeadLetter{Group: group, Key: key, MessageID: msg.ID, Topic: msg.Topic, Tags: msg.Tags,
		Keys: msg.Keys, Body: msg.Body, Properties: msg.Properties, Attempts: 3, Reason: fail.Error()}
	id, err := s.Ledger.Bury(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Store.Process(ctx, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	if !res.Dead {
		t.Fatal("delivery of a dead key not reported as dead")
	}
	got, err := s.Ledger.DeadLetter(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != "payouts" || got.Tags != "redpacket" || string(got.Body) != key ||
		got.Properties["tenant"] != "t1" || len(got.Keys) != 1 || got.Attempts != 3 || got.MessageID != msg.ID {
		t.Fatalf("dead letter lost parts of the message: %+v", got)
	}
	list, err := s.Ledger.DeadLetters(ctx, dedup.DeadLetterFilter{Group: group})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range list {
		found = found || d.ID == id
	}
	if !found {
		t.Fatalf("dead letter %d not listed", id)
	}
	// A failing publish leaves the dead letter in place.
	if err := s.Ledger.Redrive(ctx, id, func(context.Context, *idemq.Message) error {
		return errors.New("broker down")
	}); err == nil {
		t.Fatal("redrive with a failing publisher succeeded")
	}
	// ... and its key dead: a redelivery is still skipped.
	res, err = s.Store.Process(ctx, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	if !res.Dead {
		t.Fatal("a failed redrive left the key no longer dead")
	}
	// Redrive publishes the message with its ID; dedup must let it through
	// exactly once more.
	published := 0
	err = s.Ledger.Redrive(ctx, id, func(ctx context.Context, m *idemq.Message) error {
		published++
		if m.ID != msg.ID || m.Property(idemq.PropertyMessageID) != msg.ID {
			t.Errorf("redriven message id %q / property %q, want %q", m.ID, m.Property(idemq.PropertyMessageID), msg.ID)
		}
		res, err := settle(t, s.Store, req(group, m.Key), e.fn(m.Key))
		mustOutcome(t, res, err, dedup.Processed)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if published != 1 {
		t.Fatalf("published %d times", published)
	}
	res, err = s.Store.Process(ctx, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	if res.Dead {
		t.Fatal("redriven key still dead")
	}
	e.expect(t, key, 1)
	if err := s.Ledger.Redrive(ctx, id, func(context.Context, *idemq.Message) error { return nil }); !errors.Is(err, dedup.ErrAlreadyRedriven) {
		t.Fatalf("second redrive: %v, want ErrAlreadyRedriven", err)
	}
}

func testCleanup(t *testing.T, s Subject) {
	s.need(t, "Cleanup and Backdate", s.Cleanup != nil && s.Backdate != nil)
	e := newEffects(t, s)
	ctx := ctxT(t)
	var old, inside, fresh []string
	for i := 0; i < 25; i++ {
		key := uniqueKey("cleanup")
		res, err := s.Store.Process(ctx, req(group, key), e.fn(key))
		mustOutcome(t, res, err, dedup.Processed)
		switch i % 3 {
		case 0:
			s.Backdate(t, group, key, s.Keep+time.Hour)
			old = append(old, key)
		case 1:
			// Older than the retry horizon, but inside retention.
			s.Backdate(t, group, key, s.Keep-time.Minute)
			inside = append(inside, key)
		default:
			fresh = append(fresh, key)
		}
	}
	n, err := s.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(old)) {
		t.Fatalf("cleanup deleted %d rows, want %d", n, len(old))
	}
	for _, key := range append(inside, fresh...) {
		res, err := s.Store.Process(ctx, req(group, key), e.fn(key))
		mustOutcome(t, res, err, dedup.Duplicate)
	}
	if s.CutRedis == nil {
		// A key past retention is forgotten, as documented. (Behind a
		// fast path its Redis marker answers until its own TTL, which
		// Backdate does not move.)
		res, err := s.Store.Process(ctx, req(group, old[0]), e.fn(old[0]))
		mustOutcome(t, res, err, dedup.Processed)
	}
}

func testBadInput(t *testing.T, s Subject) {
	called := false
	fn := func(context.Context) error { called = true; return nil }
	cases := []struct {
		name string
		r    dedup.Request
		fn   dedup.Func
		want error
	}{
		{"empty key", dedup.Request{Group: group}, fn, idemq.ErrEmptyKey},
		{"oversized key", dedup.Request{Group: group, Key: strings.Repeat("k", idemq.MaxKeyLen+1)}, fn, idemq.ErrKeyTooLong},
		{"NUL in key", dedup.Request{Group: group, Key: "a\x00b"}, fn, idemq.ErrInvalidKey},
		{"invalid UTF-8 key", dedup.Request{Group: group, Key: "a\xffb"}, fn, idemq.ErrInvalidKey},
		{"empty group", dedup.Request{Key: "k"}, fn, dedup.ErrEmptyGroup},
		{"oversized group", dedup.Request{Group: strings.Repeat("g", idemq.MaxKeyLen+1), Key: "k"}, fn, dedup.ErrGroupTooLong},
		{"nil func", dedup.Request{Group: group, Key: "k"}, nil, dedup.ErrNilFunc},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Store.Process(ctxT(t), tc.r, tc.fn)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
	if called {
		t.Fatal("handler called for bad input")
	}
	// The longest valid key works.
	key := strings.Repeat("k", idemq.MaxKeyLen-20) + uniqueKey("")[:20]
	res, err := s.Store.Process(ctxT(t), dedup.Request{Group: group, Key: key}, func(context.Context) error { return nil })
	mustOutcome(t, res, err, dedup.Processed)
}
