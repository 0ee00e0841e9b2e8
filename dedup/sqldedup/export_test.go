package sqldedup

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
	batch := make([]*markReq, len(marks))
	for i, m := range marks {
		batch[i] = &markReq{group: m[0], key: m[1], owner: m[2], reply: make(chan markReply, 1)}
	}
	s.runMarks(batch)
	errs := make([]error, len(marks))
	for i, m := range batch {
		errs[i] = (<-m.reply).err
	}
	return errs
}

// TakeMarks queues marks and returns the first batch taken and what is
// left queued.
func TakeMarks(marks []Mark) (batch, rest []Mark) {
	var b markBatcher
	for _, m := range marks {
		b.queue = append(b.queue, &markReq{group: m[0], key: m[1], owner: m[2]})
	}
	for _, m := range b.take() {
		batch = append(batch, Mark{m.group, m.key, m.owner})
	}
	for _, m := range b.queue {
		rest = append(rest, Mark{m.group, m.key, m.owner})
	}
	return batch, rest
}

// FailMarkBatches makes every shared mark statement fail with err.
func (s *Store) FailMarkBatches(err error) { s.failMarkBatch = func() error { return err } }

// MarkBatchQuery returns the statement that finds the rows of a batch of
// marks (the UPDATE ... RETURNING, or MySQL's locking SELECT) and its
// arguments.
func (s *Store) MarkBatchQuery(marks []Mark) (string, []any) {
	batch := make([]*markReq, len(marks))
	for i, m := range marks {
		batch[i] = &markReq{group: m[0], key: m[1], owner: m[2]}
	}
	where, args := markWhere(batch)
	if s.dialect == "mysql" {
		return s.markLockQuery(where), args
	}
	return s.sql.markDoneSet + where + " RETURNING consumer_group, dedup_key", args
}
