package benchwork

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// KeyBase is the first key FillDedup writes: keys are KeyBase+i in
// decimal, 19 digits, ascending with their creation time, as snowflake
// message IDs are.
const KeyBase = 1800000000000000000

// fillChunk is the most rows one FillDedup statement inserts.
const fillChunk = 100000

// FillDedup inserts n done rows of group into the dedup table with
// set-based SQL (generate_series on PostgreSQL, a recursive CTE of 1,000
// numbers cross-joined on SQLite and MySQL/MariaDB), fillChunk rows per
// statement. Row i has the key KeyBase+i+offset and the message ID alike,
// a 32-character fingerprint, and created_at spread evenly from startMs
// (i = 0) to endMs, so keys ascend with time. The rows are what a
// transactional store writes for a delivery, minus the lease columns'
// defaults.
func FillDedup(ctx context.Context, db *gorm.DB, table, group string, offset, n, startMs, endMs int64) error {
	dialect := db.Dialector.Name()
	span := endMs - startMs
	if n <= 0 {
		return nil
	}
	for off := int64(0); off < n; off += fillChunk {
		cnt := min(fillChunk, n-off)
		var q string
		var args []any
		switch dialect {
		case "postgres":
			q = "INSERT INTO " + table + " (consumer_group, dedup_key, status, message_id, fingerprint, created_at, updated_at) " +
				"SELECT CAST(? AS text), CAST(CAST(? AS bigint) + i AS text), 2, CAST(CAST(? AS bigint) + i AS text), md5(i::text), " +
				"CAST(? AS bigint) + i * CAST(? AS bigint) / CAST(? AS bigint), CAST(? AS bigint) + i * CAST(? AS bigint) / CAST(? AS bigint) " +
				"FROM generate_series(CAST(? AS bigint), CAST(? AS bigint)) AS i"
			args = []any{group, KeyBase + offset, KeyBase + offset, startMs, span, n, startMs, span, n, off, off + cnt - 1}
		case "mysql", "sqlite":
			text, div, fp := "CHAR", "DIV", "MD5(i)"
			if dialect == "sqlite" {
				text, div, fp = "TEXT", "/", "hex(randomblob(16))"
			}
			q = "INSERT INTO " + table + " (consumer_group, dedup_key, status, message_id, fingerprint, created_at, updated_at) " +
				"WITH RECURSIVE d(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM d WHERE x < 999) " +
				"SELECT ?, CAST(? + i AS " + text + "), 2, CAST(? + i AS " + text + "), " + fp + ", " +
				"? + i * ? " + div + " ?, ? + i * ? " + div + " ? " +
				"FROM (SELECT ? + a.x * 100 + b.x AS i FROM d a CROSS JOIN d b WHERE b.x < 100) s WHERE i < ?"
			args = []any{group, KeyBase + offset, KeyBase + offset, startMs, span, n, startMs, span, n, off, off + cnt}
		default:
			return fmt.Errorf("benchwork: fill: unsupported dialect %q", dialect)
		}
		if err := db.WithContext(ctx).Exec(q, args...).Error; err != nil {
			return fmt.Errorf("benchwork: fill %s: %w", table, err)
		}
	}
	return nil
}
