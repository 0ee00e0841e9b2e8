package sqldedup

// SQLiteDSN returns the DSN idemq recommends for a SQLite database file at
// path with the pure-Go driver github.com/glebarez/sqlite. Most programs
// call sqlitedb.Open (package dedup/sqldedup/sqlitedb) instead, which opens
// the file with this DSN, limits the pool to one connection and keeps the
// driver's allocator warm. The settings:
//
//   - busy_timeout(10000): a writer waits up to 10 s for the lock instead of
//     failing at once with SQLITE_BUSY;
//   - journal_mode(WAL): readers do not block the writer;
//   - synchronous(FULL): a committed transaction survives power loss;
//   - foreign_keys(1): foreign keys are enforced;
//   - _txlock=immediate: every read-write transaction starts with BEGIN
//     IMMEDIATE, taking the write lock up front, so that two transactions
//     never deadlock upgrading read locks (which busy_timeout cannot
//     resolve).
//
// SQLite has one writer. With many consumer goroutines, also limit the pool
// to one connection (sqlDB.SetMaxOpenConns(1)): writers then queue in Go
// instead of sleeping in SQLite's busy handler. A transactional handler
// must then write only through dedup.Tx(ctx), since the transaction holds
// the one connection.
//
// The driver stops reading parameters at _time_format, so none is set.
// path is a plain file name, not a file: URI, and must not contain '?'.
func SQLiteDSN(path string) string {
	return path + "?_pragma=busy_timeout(10000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)" +
		"&_txlock=immediate"
}
