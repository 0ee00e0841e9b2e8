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
