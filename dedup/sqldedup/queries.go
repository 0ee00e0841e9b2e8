package sqldedup

import (
	"github.com/idemq/idemq/internal/sqlclock"
	"github.com/idemq/idemq/internal/sqlscript"
)

// queries holds the dialect-specific SQL of one store. Placeholders are "?"
// on every dialect (gorm rewrites them for PostgreSQL); the one statement
// sent to the PostgreSQL driver without gorm is derived from its "?" form
// by sqlscript.Numbered.
type queries struct {
	now   string // expression: database clock in Unix ms
	nowUS string // expression: database clock in Unix µs (fencing tokens)

	insertDone string // group, key, message_id, fingerprint (sqlite: + now ms twice)

	insertDonePG     string // insertDone numbered for the PostgreSQL driver ($1...)
	beginInsertMySQL string // BEGIN; insertDone
	selectRow        string // group, key -> status, fingerprint, lease_until - now
	// selectDone reads a key's status and fingerprint (CheckDoneFirst),
	// for the driver directly: numbered ($1...) on PostgreSQL.
	selectDone  string
	insertClaim string // group, key, owner, lease ms, message_id, fingerprint
	takeover    string // owner, lease ms, message_id, fingerprint, group, key
	selectFence string // group, key, owner -> fence
	// insertClaimRet and takeoverRet are insertClaim and takeover
	// returning the new fencing token, where the dialect has RETURNING
	// on both (PostgreSQL, SQLite); "" elsewhere (a claim then reads its
	// token with selectFence).
	insertClaimRet string
	takeoverRet    string
	// claimHead and claimRow build a multi-row insertClaim returning each
	// claimed row's key and fencing token (leasebatch.go), on SQLite only
	// (see markDone for why); "" elsewhere.
	claimHead, claimRow, claimTail string
	// markDoneSet is markDone's SET and table, for a batch of marks
	// (leasebatch.go).
	markDoneSet string
	renew       string // lease ms, group, key, owner
	markDone    string // group, key, owner
	release     string // group, key, owner
	insertDead  string // group, key, message_id, fingerprint
	clearDead   string // group, key
}

func buildQueries(dialect, prefix string) queries {
	t := prefix + "dedup"
	var q queries
	switch dialect {
	case "postgres":
		q.now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
		q.nowUS = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
	case "mysql":
		// UTC, not UNIX_TIMESTAMP(NOW()): see package sqlclock.
		q.now = sqlclock.MySQLMillis
		q.nowUS = sqlclock.MySQLMicros
	default:
		q.now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
		q.nowUS = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
	}
	greatest := "GREATEST"
	if dialect == "sqlite" {
		greatest = "max"
	}
	onConflictNothing := " ON CONFLICT (consumer_group, dedup_key) DO NOTHING"
	if dialect == "mysql" {
		// A no-op update that sets the insert ID to the row's status (never
		// 0): Store.inserted reads it, since the rows-affected count depends
		// on the DSN's clientFoundRows. Unlike INSERT IGNORE, the duplicate
		// branch takes the row's exclusive lock, so a copy of a delivery in
		// flight waits for it to commit or roll back.
		onConflictNothing = " ON DUPLICATE KEY UPDATE status = LAST_INSERT_ID(status)"
	}
	now := q.now
	q.insertDone = "INSERT INTO " + t + " (consumer_group, dedup_key, status, message_id, fingerprint, created_at, updated_at) VALUES (?, ?, 2, ?, ?, " + now + ", " + now + ")" + onConflictNothing
	if dialect == "sqlite" {
		// SQLite runs in this process: its clock is the host's, so the
		// time is bound from Go (time.Now) rather than computed in SQL,
		// which keeps the statement the pure-Go driver parses on every
		// execution short.
		q.insertDone = "INSERT INTO " + t + " (consumer_group, dedup_key, status, message_id, fingerprint, created_at, updated_at) VALUES (?, ?, 2, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
	}
	q.insertDonePG = sqlscript.Numbered(q.insertDone)
	q.beginInsertMySQL = "BEGIN; " + q.insertDone
	q.selectRow = "SELECT status, fingerprint, lease_until - " + now + " AS remaining FROM " + t + " WHERE consumer_group = ? AND dedup_key = ?"
	q.selectDone = "SELECT status, fingerprint FROM " + t + " WHERE consumer_group = ? AND dedup_key = ?"
	if dialect == "postgres" {
		q.selectDone = sqlscript.Numbered(q.selectDone)
	}
	// A claim's fencing token: the database clock in microseconds for a
	// new row, and above the previous owner's token for a takeover.
	claimFence := q.nowUS
	if dialect == "mysql" {
		// The new row's fencing token is also the insert ID the server
		// returns with the claim, which saves reading it back; the
		// duplicate branch then sets the insert ID to the row's status
		// (1 to 3), which no token is (Store.insertClaim).
		claimFence = "LAST_INSERT_ID(" + q.nowUS + ")"
	}
	q.insertClaim = "INSERT INTO " + t + " (consumer_group, dedup_key, status, owner, lease_until, message_id, fingerprint, fence, created_at, updated_at) VALUES (?, ?, 1, ?, " + now + " + ?, ?, ?, " + claimFence + ", " + now + ", " + now + ")" + onConflictNothing
	q.takeover = "UPDATE " + t + " SET owner = ?, lease_until = " + now + " + ?, message_id = ?, fingerprint = ?, fence = " + greatest + "(fence + 1, " + q.nowUS + "), updated_at = " + now + " WHERE consumer_group = ? AND dedup_key = ? AND status = 1 AND lease_until < " + now
	q.selectFence = "SELECT fence FROM " + t + " WHERE consumer_group = ? AND dedup_key = ? AND status = 1 AND owner = ?"
	q.renew = "UPDATE " + t + " SET lease_until = " + now + " + ?, updated_at = " + now + " WHERE consumer_group = ? AND dedup_key = ? AND status = 1 AND owner = ?"
	q.markDoneSet = "UPDATE " + t + " SET status = 2, owner = '', lease_until = 0, updated_at = " + now
	q.markDone = q.markDoneSet + " WHERE consumer_group = ? AND dedup_key = ? AND status = 1 AND owner = ?"
	if dialect != "mysql" {
		q.insertClaimRet = q.insertClaim + " RETURNING fence"
		q.takeoverRet = q.takeover + " RETURNING fence"
	}
	if dialect == "sqlite" {
		q.claimHead = "INSERT INTO " + t + " (consumer_group, dedup_key, status, owner, lease_until, message_id, fingerprint, fence, created_at, updated_at) VALUES "
		q.claimRow = "(?, ?, 1, ?, " + now + " + ?, ?, ?, " + q.nowUS + ", " + now + ", " + now + ")"
		q.claimTail = onConflictNothing + " RETURNING consumer_group, dedup_key, fence"
	}
	q.release = "DELETE FROM " + t + " WHERE consumer_group = ? AND dedup_key = ? AND status = 1 AND owner = ?"
	// A dead row keeps the fingerprint of the message buried under it, so
	// that a different message under the same key is a mismatch, not a
	// plain duplicate.
	q.insertDead = "INSERT INTO " + t + " (consumer_group, dedup_key, status, message_id, fingerprint, created_at, updated_at) VALUES (?, ?, 3, ?, ?, " + now + ", " + now + ")" + onConflictNothing
	q.clearDead = "DELETE FROM " + t + " WHERE consumer_group = ? AND dedup_key = ? AND status = 3"
	return q
}
