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
