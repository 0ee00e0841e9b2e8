// Package sqldedup is the SQL dedup store of idemq, through gorm, on SQLite
// (the embedded default, github.com/glebarez/sqlite), PostgreSQL and
// MySQL/MariaDB. Package sqlitedb (dedup/sqldedup/sqlitedb) opens SQLite
// with the settings idemq recommends.
//
// The store keeps one row per (consumer group, dedup key) in a table whose
// primary key is the pair (plus one index ordered by time for cleanup, so a
// message costs two index inserts), and decides "first time or duplicate" with an
// insert that does nothing on conflict (ON CONFLICT DO NOTHING, or MySQL's
// no-op ON DUPLICATE KEY UPDATE) followed by its rows-affected count (on
// MySQL/MariaDB its insert ID: see "MySQL/MariaDB DSN settings"). It never
// catches a unique violation: on PostgreSQL that would abort the handler's
// transaction.
//
// # Transactional mode
//
// The default. The dedup row is inserted in a new database transaction that
// the handler receives through dedup.Tx(ctx); the store commits it when the
// handler returns nil and rolls it back otherwise (also on panic, which is
// re-raised). So the handler's database effects and the dedup row become
// durable together: exactly once. A concurrent second delivery of the same
// key blocks on the unique index until the first commits (then it is a
// duplicate) or rolls back (then it runs).
//
// With Config.CheckDoneFirst, a duplicate of a key already committed DONE
// or DEAD is answered by one read of its row (the primary key) before any transaction is opened, with
// the same Duplicate result (Mismatch, Dead) the transactional path gives.
// Every other delivery (no row yet, a row in flight, a failed read) goes
// through the transaction, whose insert stays the authority. The read
// costs fresh messages one round trip, so the option is off by default.
//
// # Only a committed transaction is acknowledged
//
// Process reports Processed only when the database confirmed the commit:
//
//   - PostgreSQL answers COMMIT of a transaction that a failed statement
//     aborted with ROLLBACK and no error. The store reads the answer on
//     both begin paths and returns ErrNotCommitted.
//   - The handler's transaction (dedup.Tx) records the first statement that
//     fails. A handler that swallows the error and returns nil gets its
//     transaction rolled back and ErrStatementFailed (wrapping the
//     statement's error), on every database; the delivery is retried, never
//     acknowledged. After such a failure no statement of the handler
//     reaches the database until it rolls back to a savepoint set before
//     the failure, as PostgreSQL itself requires: on MySQL/MariaDB and
//     SQLite, where a transaction can outlive a failed statement or be
//     rolled back whole by the server (a deadlock), the handler's later
//     writes could otherwise commit on their own outside the transaction.
//     A failure undone with ROLLBACK TO SAVEPOINT (gorm's nested
//     Transaction does this when its function returns an error) is the
//     handler's business and does not stop the commit.
//   - The handler cannot end the store's transaction: COMMIT, ROLLBACK and
//     BEGIN statements (leading comments do not hide them) and gorm's
//     Commit and Rollback are refused, and count as a failed statement. On
//     MySQL/MariaDB so are the statements the server runs only after
//     committing the open transaction: CREATE, ALTER, DROP, RENAME or
//     TRUNCATE (CREATE and DROP TEMPORARY TABLE excepted), LOCK and UNLOCK
//     TABLES, SET autocommit, account statements and administrative ones
//     (ANALYZE, OPTIMIZE, FLUSH...); sent there, they would make the dedup
//     row and the handler's writes so far durable before its outcome is
//     known. Nothing of a refused statement reaches the database.
//   - A connection lost at COMMIT leaves the outcome unknown: Process
//     returns an error wrapping dedup.ErrUnavailable. If the commit did
//     happen, the redelivery finds the key done.
//
// Errors that appear only while the handler reads rows (rows.Err) are not
// seen by the store; on PostgreSQL they abort the transaction and the
// commit check above catches them. The store cannot see inside a stored
// procedure: on MySQL/MariaDB a handler must not CALL one that commits.
// A list of statements sent as one query (which PostgreSQL's simple
// protocol, SQLite and MySQL/MariaDB with multiStatements=true run one
// after another) is read statement by statement, past literals and
// comments: if it holds one that would end the transaction, commit it
// implicitly or set a savepoint, the whole list is refused.
//
// # Failures that are not the handler's
//
// A conflict between concurrent transactions (MySQL/MariaDB deadlock 1213
// and lock wait timeout 1205, PostgreSQL serialization failure 40001 and
// deadlock 40P01, SQLite BUSY and LOCKED), met by the store's statements or
// the handler's, rolls the run back; the store runs the whole transaction
// again in place, handler included, up to 8 more times with a jittered
// backoff (about 2 ms growing to 250 ms). When the retries run out the
// error wraps dedup.ErrConflict. A database that cannot be reached (a
// refused, reset or killed connection, a network timeout, a server
// shutting down or refusing connections) or cannot take writes (read-only:
// a standby after a failover, a server, session or file system set
// read-only; out of disk or memory) makes Process return an error
// wrapping dedup.ErrUnavailable. Either way nothing was recorded, and
// dedup.IsInfrastructure tells middleware not to count an attempt. The
// handler's own errors (idemq.Permanent and the rest) are returned
// unchanged, unless they come from the transaction's own connection
// failing.
//
// # MySQL/MariaDB DSN settings
//
// The first-delivery test does not depend on the DSN: the dedup insert's
// duplicate branch (ON DUPLICATE KEY UPDATE status = LAST_INSERT_ID(status))
// makes the insert ID non-zero for a duplicate, where the rows-affected
// count would depend on clientFoundRows. Unlike INSERT IGNORE, that branch
// takes the row's exclusive lock, so a copy of a delivery in flight waits
// for it to commit (then it is a duplicate) or roll back (then it runs).
// The lease claim reads the insert ID the same way, and its UPDATEs match
// only the rows they change, so lease mode does not depend on the flag
// either. Both modes are tested with clientFoundRows and multiStatements in
// every combination.
//
// # One round trip for BEGIN and the dedup insert
//
// At the concurrency a consumer runs at, a round trip costs more than the
// dedup insert itself. On PostgreSQL (pgx, the driver of
// gorm.io/driver/postgres) the store sends BEGIN and the insert as one pgx
// pipeline (the insert a statement pgx prepares once per connection) on a
// connection it pins for the transaction; the handler's statements run on
// that connection through the *gorm.DB that dedup.Tx returns, and its own
// Transaction calls become savepoints. On MySQL/MariaDB it does the same
// when the DSN has multiStatements=true and interpolateParams=true. On
// SQLite there is no round trip, but the pure-Go driver pays per call, so
// BEGIN IMMEDIATE and the insert go as one call. Whenever Config.TxOptions
// is set, and on MySQL without those DSN settings, the store uses an
// ordinary gorm transaction (New logs the missing MySQL settings at Info). A connection whose COMMIT or ROLLBACK fails is
// discarded, never returned to the pool inside a transaction.
//
// # Lease mode
//
// For effects outside the database. The key is claimed as PROCESSING with a
// random owner token and a lease deadline on the database clock, and the
// handler runs under a dedup.LeaseKeeper, the same one the Redis lease
// store uses, so both lease stores behave the same:
//
//   - the handler's context ends LeaseDuration/5 before the lease could
//     expire, counted from when the claim (or the last confirmed renewal)
//     was sent, by the clock itself: a process paused past its lease and
//     resumed finds ctx.Err() != nil on its first look;
//   - the lease is renewed every RenewInterval (LeaseDuration/3) whatever
//     happens to the delivery context; a renewal that fails, finds the key
//     taken, or is not confirmed before the deadline ends the handler's
//     context at once with a cause wrapping dedup.ErrLeaseLost;
//   - the handler's context carries a fencing token (dedup.Fence), kept in
//     the dedup table's fence column: the database clock in microseconds
//     for a new claim, and above the previous owner's token for a
//     takeover. Pass it to an external API that refuses lower tokens.
//
// Success marks the key DONE, failure deletes the claim; both are
// compare-and-set on the owner token, so a process whose lease was taken
// over (a zombie) can neither mark nor release its successor's claim. A
// claim whose lease ran out is taken over by the next delivery.
//
// A message costs lease mode two statements of its own besides the
// handler's work: the claim, which also returns the fencing token
// (RETURNING on PostgreSQL and SQLite; on MySQL/MariaDB the claim sets the
// insert ID to it with LAST_INSERT_ID(token); the rare takeover of an
// expired claim reads it with one more SELECT there), and the DONE mark. On
// SQLite with a pool of one connection (as sqlitedb.Open sets it),
// concurrent deliveries share them: while one claim (or mark) statement
// runs, the claims (marks) that arrive queue, and the next statement
// carries them all, at most 64 and one per key. Each is still answered on
// its own, exactly as its single statement would answer it: a shared claim
// is one multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING in key order
// (a key already present goes on to the takeover and the row read alone), a
// shared mark one UPDATE ... RETURNING, compare-and-set on each mark's own
// owner token. A lone claim or mark runs at once. When a shared statement
// fails, its claims (marks) run again one by one, so a failure costs only
// its own delivery. Elsewhere each claim and mark is its own statement:
// PostgreSQL and MySQL/MariaDB run them in parallel and share the log flush
// of concurrent commits themselves, and there, as on SQLite with several
// connections, waiting for a running batch measured slower than not sharing
// (see markDone in leasebatch.go for the figures).
//
// # Attempts, dead letters and retention
//
// Store also implements dedup.Ledger: attempts and dead letters live in
// their own tables and are written in their own short transactions, never in
// the handler's, so they survive its rollback. Burying a dead letter marks
// its key DEAD in the dedup table, so redeliveries are duplicates; a redrive
// clears the mark and the attempts before re-publishing. One message is
// buried once: Bury locks the key's dedup row before it looks for a live
// dead letter, so copies failing at the same moment share one dead letter,
// on every database. A message whose fields the database cannot store as
// they are (NUL or invalid UTF-8 in text, a body over 1 MiB) is buried with
// what can be stored, marked truncated, and cannot be redriven.
// StaleAttempts lists failure records of keys that are neither done nor
// dead, and deletes the leftovers of keys that are.
//
// # Retention and cleanup
//
// Rows past the retention (Config.Retention.Keep, by the database clock)
// are deleted by Sweep: done keys created before the cutoff, attempts
// records whose last failure is before it, and dead letters redriven
// before it. A processing or dead key is never deleted, nor a dead letter
// that was not redriven, nor any row inside the retention. Each table has
// an index ordered by time for this (migration step 0003: a partial index
// on done rows' created_at on PostgreSQL and SQLite, (status, created_at)
// on MySQL/MariaDB), so rows are found oldest first and a batch of
// CleanupBatch rows reads what it deletes, whatever the table's size; on
// PostgreSQL a batch skips rows another session has locked, on
// MySQL/MariaDB it runs under READ COMMITTED and locks no gaps. Cleanup
// does the same for the dedup table alone. Janitor runs Sweep in the
// background at a pace, with Prometheus metrics for the rows deleted, the
// rows past retention and the oldest done row's age (docs/capacity.md has
// the measured rates). New rejects a retention shorter than the retry
// horizon plus the redrive window. StartRetention (dedup.RetentionRunner)
// runs a Janitor with its defaults: the consumer calls it at Start, so a
// consumer keeps its store at its retention without further setup.
//
// # Schema
//
// Migrate creates and upgrades the tables with versioned steps (recorded in
// <prefix>schema_migrations, applied under a lock, so processes starting
// together migrate once; tables made before versioning are adopted).
// Schema returns the same steps as plain SQL per dialect for users who run
// their own migrations. Both come from the same embedded files, so they
// cannot drift. Check (dedup.Checker, called by the consumer at Start)
// fails with ErrSchemaNotReady, naming the missing table or migration step
// and saying "run Migrate (or idemq migrate)", when the tables are missing
// or behind.
//
// Mixing modes on one table is not supported: give each mode its own table
// prefix.
package sqldedup
