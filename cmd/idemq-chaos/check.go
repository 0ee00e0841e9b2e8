package main

import (
	"fmt"
	"sort"
	"strings"
)

// Expect is what must become of a message by the end of a run.
type Expect int

const (
	// ExpectProcessed: its effect happens exactly once, and it is never
	// dead-lettered.
	ExpectProcessed Expect = iota + 1
	// ExpectBuried: it is dead-lettered exactly once, and its effect never
	// happens.
	ExpectBuried
)

// String returns the expectation's name.
func (e Expect) String() string {
	switch e {
	case ExpectProcessed:
		return "processed"
	case ExpectBuried:
		return "buried"
	}
	return "?"
}

// MessageRecord is the broker's durable record of one message: what it is,
// how many copies were published, and what became of the copies.
type MessageRecord struct {
	N       int    // message number, unique in the run
	Class   string // how its handler behaves (see plan.go)
	Expect  Expect
	Account int   // the account its effect credits
	Amount  int64 // by how much
	// Copies is the number of copies published (1 + duplicates); Acked is
	// how many of them the broker saw acknowledged by the end.
	Copies, Acked int
	// Deliveries counts every delivery of every copy.
	Deliveries int
}

// Observed is what the run left behind, read after the workers stopped.
type Observed struct {
	// Effects is, per message number, how many times its effect happened:
	// rows in the effects table (transactional modes) or effects applied
	// by the external API (lease modes).
	Effects map[int]int
	// DeadLetters is, per message number, how many dead letters hold it.
	DeadLetters map[int]int
	// DeadLetterReasons holds, per message number, the reason of one of
	// its dead letters, to explain a burial that should not have happened.
	DeadLetterReasons map[int]string
	// UnmatchedDeadLetters are dead letters that name no message of the
	// run.
	UnmatchedDeadLetters int
	// Balances is the final balance of every account, and BalancesKnown
	// says whether it was read.
	Balances      map[int]int64
	BalancesKnown bool
	// ZombieWrites is, per message number, how many external writes came
	// from a handler run that was no longer the key's latest owner while
	// its context was still alive (lease modes).
	ZombieWrites map[int]int
}

// Violation kinds.
const (
	VDouble       = "double"        // effect happened more than once
	VLost         = "lost"          // every copy acked, no effect and no dead letter
	VStuck        = "stuck"         // some copy never acked: redelivered forever
	VBuriedTwice  = "buried-twice"  // more than one dead letter for one message
	VWrongBuried  = "wrong-buried"  // a message that should succeed was dead-lettered
	VPoisonEffect = "poison-effect" // a message that always fails has an effect
	VBoth         = "both"          // processed and dead-lettered
	VZombie       = "zombie-write"  // a stale lease owner wrote its external effect
	VBalance      = "balance"       // an account's balance does not reconcile
	VUnmatched    = "unmatched-dl"  // a dead letter that names no message
)

// Violation is one broken promise.
type Violation struct {
	Kind   string
	N      int // message number, or account for VBalance, or -1
	Detail string
}

// String returns the violation as one report line.
func (v Violation) String() string {
	return fmt.Sprintf("%s #%d: %s", v.Kind, v.N, v.Detail)
}

// Report is the checker's verdict on one run.
type Report struct {
	Messages, Copies, Deliveries, Acked int
	Processed, Buried                   int // messages whose end is their expected one
	Counts                              map[string]int
	Violations                          []Violation
}

// OK reports whether the run kept every promise.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Summary lists the violation counts by kind, "-" when there are none.
func (r *Report) Summary() string {
	if r.OK() {
		return "-"
	}
	kinds := make([]string, 0, len(r.Counts))
	for k := range r.Counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.Counts[k]))
	}
	return strings.Join(parts, " ")
}

// Check compares every message's record with what the run left behind.
// Per message: the effect happened once and nothing was buried (expected
// processed), or it was buried once and had no effect (expected buried);
// every copy was acknowledged; no stale lease owner wrote. Per account: the
// balance equals the sum of the amounts of the effects that happened and the
// sum the plan expects.
func Check(msgs []MessageRecord, obs Observed) *Report {
	r := &Report{Counts: map[string]int{}}
	add := func(kind string, n int, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: kind, N: n, Detail: fmt.Sprintf(format, args...)})
		r.Counts[kind]++
	}
	known := make(map[int]bool, len(msgs))
	expected := map[int]int64{} // account -> balance the plan expects
	applied := map[int]int64{}  // account -> sum of the effects that happened
	for _, m := range msgs {
		known[m.N] = true
		r.Messages++
		r.Copies += m.Copies
		r.Deliveries += m.Deliveries
		r.Acked += m.Acked
		eff, dl := obs.Effects[m.N], obs.DeadLetters[m.N]
		applied[m.Account] += int64(eff) * m.Amount
		if m.Expect == ExpectProcessed {
			expected[m.Account] += m.Amount
		}
		if eff > 1 {
			add(VDouble, m.N, "%s message: effect happened %d times", m.Class, eff)
		}
		if dl > 1 {
			add(VBuriedTwice, m.N, "%s message: %d dead letters", m.Class, dl)
		}
		if eff > 0 && dl > 0 {
			add(VBoth, m.N, "%s message: effect %d and %d dead letters: %s", m.Class, eff, dl, clip(obs.DeadLetterReasons[m.N], 240))
		}
		switch {
		case eff == 0 && dl == 0 && m.Acked < m.Copies:
			add(VStuck, m.N, "%s message: neither processed nor buried, %d of %d copies unacknowledged after %d deliveries", m.Class, m.Copies-m.Acked, m.Copies, m.Deliveries)
		case eff == 0 && dl == 0:
			add(VLost, m.N, "%s message: every copy acknowledged (%d deliveries) but no effect and no dead letter", m.Class, m.Deliveries)
		case m.Acked < m.Copies:
			add(VStuck, m.N, "%s message: %d of %d copies unacknowledged after %d deliveries", m.Class, m.Copies-m.Acked, m.Copies, m.Deliveries)
		}
		switch {
		case m.Expect == ExpectProcessed && dl > 0 && eff == 0:
			add(VWrongBuried, m.N, "%s message should have succeeded but was dead-lettered: %s", m.Class, clip(obs.DeadLetterReasons[m.N], 240))
		case m.Expect == ExpectBuried && eff > 0:
			add(VPoisonEffect, m.N, "%s message always fails but its effect happened %d times", m.Class, eff)
		}
		if z := obs.ZombieWrites[m.N]; z > 0 {
			add(VZombie, m.N, "%s message: %d external writes by a handler run whose lease had been taken over", m.Class, z)
		}
		if eff == 1 || dl == 1 {
			if m.Expect == ExpectProcessed && eff == 1 && dl == 0 {
				r.Processed++
			}
			if m.Expect == ExpectBuried && dl == 1 && eff == 0 {
				r.Buried++
			}
		}
	}
	for n, c := range obs.Effects {
		if !known[n] && c > 0 {
			add(VDouble, n, "effect of a message the broker never published (%d)", c)
		}
	}
	for n, c := range obs.DeadLetters {
		if !known[n] && c > 0 {
			add(VUnmatched, n, "%d dead letters of a message the broker never published", c)
		}
	}
	if obs.UnmatchedDeadLetters > 0 {
		add(VUnmatched, -1, "%d dead letters name no message of the run", obs.UnmatchedDeadLetters)
	}
	if obs.BalancesKnown {
		accounts := map[int]bool{}
		for a := range expected {
			accounts[a] = true
		}
		for a := range obs.Balances {
			accounts[a] = true
		}
		for a := range applied {
			accounts[a] = true
		}
		ids := make([]int, 0, len(accounts))
		for a := range accounts {
			ids = append(ids, a)
		}
		sort.Ints(ids)
		for _, a := range ids {
			got := obs.Balances[a]
			if got != applied[a] || got != expected[a] {
				add(VBalance, a, "account balance %d, effects add up to %d, plan expects %d", got, applied[a], expected[a])
			}
		}
	}
	return r
}

// clip shortens s to at most n bytes, marking the cut.
func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " | ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
