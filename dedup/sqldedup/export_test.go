package sqldedup

import (
	"slices"

	"github.com/idemq/idemq/dedup"
)

// WithoutFastBegin returns cfg with the one-round-trip begin turned off, so
// that tests run both transaction paths.
func WithoutFastBegin(cfg Config) Config {
	cfg.disableFastBegin = true
	return cfg
}

// FastBegin reports which fast begin the store uses ("" for none).
func (s *Store) FastBegin() string { return s.fastBegin }

// ConflictRetries returns how many transactional runs the store retried in
// place after a conflict.
func (s *Store) ConflictRetries() int64 { return s.conflictRetries.Load() }

// CleanupQuery returns the statement that deletes one batch of expired
// rows of table ("dedup", "attempts" or "dead_letters"), and its arguments
// for cutoff and limit.
func (s *Store) CleanupQuery(table string, cutoff int64, limit int) (string, []any) {
	k := map[string]sweepKind{"dedup": sweepDedup, "attempts": sweepAttempts, "dead_letters": sweepDeadLetters}[table]
	args := []any{cutoff, limit}
	if s.dialect != "mysql" {
		args = append(args, cutoff)
	}
	return cleanupQuery(s.dialect, s.prefix, k), args
}

// MarkStatements returns how many statements lease-mode DONE marks took.
func (s *Store) MarkStatements() int64 { return s.markStatements.Load() }

// Mark is one lease-mode DONE mark: group, key, owner.
type Mark [3]string

// RunMarks runs marks as one batch and returns each one's error, in order.
func (s *Store) RunMarks(marks []Mark) []error {
	batch := markCalls(marks)
	s.runMarks(batch)
	errs := make([]error, len(marks))
	for i, m := range batch {
		errs[i] = (<-m.reply).a
	}
	return errs
}

func markCalls(marks []Mark) []*markCall {
	batch := make([]*markCall, len(marks))
	for i, m := range marks {
		batch[i] = &markCall{q: mark{m[0], m[1], m[2]}, key: [2]string{m[0], m[1]}, reply: make(chan answer[error], 1)}
	}
	return batch
}

// TakeMarks queues marks and returns the first batch taken and what is
// left queued.
func TakeMarks(marks []Mark) (batch, rest []Mark) {
	var c combiner[mark, error]
	c.queue = markCalls(marks)
	for _, m := range c.take() {
		batch = append(batch, Mark{m.q.group, m.q.key, m.q.owner})
	}
	for _, m := range c.queue {
		rest = append(rest, Mark{m.q.group, m.q.key, m.q.owner})
	}
	return batch, rest
}

// FailMarkBatches makes every shared mark statement fail with err.
func (s *Store) FailMarkBatches(err error) { s.failMarkBatch = func() error { return err } }

// MarkBatchQuery returns the UPDATE ... RETURNING of a batch of marks and
// its arguments.
func (s *Store) MarkBatchQuery(marks []Mark) (string, []any) {
	where, args := markWhere(markCalls(marks))
	return s.sql.markDoneSet + where + " RETURNING consumer_group, dedup_key", args
}

// ClaimStatements returns how many statements lease-mode claims by insert
// took.
func (s *Store) ClaimStatements() int64 { return s.claimStatements.Load() }

// FailClaimBatches makes every shared claim statement fail with err.
func (s *Store) FailClaimBatches(err error) { s.failClaimBatch = func() error { return err } }

// ClaimResult is what a claim by insert answered.
type ClaimResult struct {
	Claimed bool
	Fence   uint64
	Err     error
}

// RunClaims runs claims of keys (group "g") for owners as one batch and
// returns each one's answer, in order.
func (s *Store) RunClaims(keys, owners []string) []ClaimResult {
	batch := make([]*claimCall, len(keys))
	for i, k := range keys {
		batch[i] = &claimCall{q: claimQ{req: dedup.Request{Group: "g", Key: k, MessageID: k}, owner: owners[i], leaseMS: 60000},
			key: [2]string{"g", k}, reply: make(chan answer[claimA], 1)}
	}
	calls := slices.Clone(batch) // runClaims sorts its batch
	s.runClaims(batch)
	out := make([]ClaimResult, len(keys))
	for i, c := range calls {
		a := (<-c.reply).a
		out[i] = ClaimResult{a.claimed, a.fence, a.err}
	}
	return out
}
