package main

import (
	"testing"
)

// cleanRun is a run in which every promise was kept: message 1 and 2
// processed once (2 had a duplicate), message 3 buried once.
func cleanRun() ([]MessageRecord, Observed) {
	msgs := []MessageRecord{
		{N: 1, Class: "normal", Expect: ExpectProcessed, Account: 0, Amount: 10, Copies: 1, Acked: 1, Deliveries: 1},
		{N: 2, Class: "normal", Expect: ExpectProcessed, Account: 1, Amount: 5, Copies: 2, Acked: 2, Deliveries: 3},
		{N: 3, Class: "poison", Expect: ExpectBuried, Account: 1, Amount: 7, Copies: 1, Acked: 1, Deliveries: 1},
	}
	obs := Observed{
		Effects:       map[int]int{1: 1, 2: 1},
		DeadLetters:   map[int]int{3: 1},
		Balances:      map[int]int64{0: 10, 1: 5},
		BalancesKnown: true,
		ZombieWrites:  map[int]int{},
	}
	return msgs, obs
}

func TestCheckCleanRun(t *testing.T) {
	msgs, obs := cleanRun()
	r := Check(msgs, obs)
	if !r.OK() {
		t.Fatalf("clean run reported violations: %v", r.Violations)
	}
	if r.Processed != 2 || r.Buried != 1 || r.Copies != 4 || r.Deliveries != 5 {
		t.Fatalf("report = %+v", r)
	}
	if r.Summary() != "-" {
		t.Fatalf("Summary() = %q", r.Summary())
	}
}

// wantOnly asserts that r holds exactly the given violation kinds, each
// naming message n.
func wantOnly(t *testing.T, r *Report, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for _, v := range r.Violations {
		got[v.Kind]++
		if n, ok := want[v.Kind]; !ok || v.N != n {
			t.Errorf("unexpected violation %v", v)
		}
	}
	for k := range want {
		if got[k] == 0 {
			t.Errorf("violation %s not reported; got %v", k, r.Violations)
		}
	}
	if r.OK() {
		t.Error("OK() on a run with violations")
	}
}

func TestCheckReportsPlantedDouble(t *testing.T) {
	msgs, obs := cleanRun()
	obs.Effects[2] = 2 // message 2's effect happened twice...
	obs.Balances[1] = 10
	r := Check(msgs, obs)
	// ...which is a double, and account 1 is 5 over the plan.
	wantOnly(t, r, map[string]int{VDouble: 2, VBalance: 1})
}

func TestCheckReportsPlantedLoss(t *testing.T) {
	msgs, obs := cleanRun()
	delete(obs.Effects, 1) // message 1 acknowledged, effect gone
	obs.Balances[0] = 0
	r := Check(msgs, obs)
	wantOnly(t, r, map[string]int{VLost: 1, VBalance: 0})
}

func TestCheckReportsLostDeadLetter(t *testing.T) {
	msgs, obs := cleanRun()
	delete(obs.DeadLetters, 3) // the poison message acknowledged, never buried
	r := Check(msgs, obs)
	wantOnly(t, r, map[string]int{VLost: 3})
}

func TestCheckReportsStuckMessage(t *testing.T) {
	msgs, obs := cleanRun()
	msgs[2].Acked = 0 // the poison message redelivered forever, never buried
	delete(obs.DeadLetters, 3)
	r := Check(msgs, obs)
	wantOnly(t, r, map[string]int{VStuck: 3})
}

func TestCheckReportsBuriedTwiceAndWrongBurial(t *testing.T) {
	msgs, obs := cleanRun()
	obs.DeadLetters[3] = 2 // buried twice
	delete(obs.Effects, 1) // a good message buried instead of processed
	obs.DeadLetters[1] = 1
	obs.Balances[0] = 0
	r := Check(msgs, obs)
	if r.Counts[VBuriedTwice] != 1 || r.Counts[VWrongBuried] != 1 || r.Counts[VBalance] != 1 || len(r.Violations) != 3 {
		t.Fatalf("violations = %v", r.Violations)
	}
}

func TestCheckReportsZombieWriteAndPoisonEffect(t *testing.T) {
	msgs, obs := cleanRun()
	obs.ZombieWrites[1] = 1
	obs.Effects[3] = 1 // the poison message's effect committed
	obs.Balances[1] += 7
	r := Check(msgs, obs)
	want := map[string]int{VZombie: 1, VPoisonEffect: 1, VBoth: 1, VBalance: 1}
	for k, n := range want {
		if r.Counts[k] != n {
			t.Errorf("%s: %d, want %d (%v)", k, r.Counts[k], n, r.Violations)
		}
	}
}

func TestCheckReportsUnknownMessages(t *testing.T) {
	msgs, obs := cleanRun()
	obs.UnmatchedDeadLetters = 2
	obs.DeadLetters[99] = 1
	r := Check(msgs, obs)
	if r.Counts[VUnmatched] != 2 {
		t.Fatalf("violations = %v", r.Violations)
	}
}
