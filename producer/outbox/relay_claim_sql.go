package outbox

import (
	"database/sql"
	"strings"

	"gorm.io/gorm"
)

// claimQuery is one claim's SQL, shared by the three dialects: pick
// selects the ids of the due rows (where, ordered, limited); each dialect
// stamps them with the claim token and deadline in its own way.
type claimQuery struct {
	table    string
	token    string
	now      string // the database clock
	until    string // now + Visibility, with untilArg
	untilArg any
	where    string // due rows, with the arguments at the head of pickArgs
	pick     string
	pickArgs []any
}

// postgres claims in one statement, one short transaction: it locks due
// rows, skipping rows another relay is claiming, and stamps the claim. The
// picked ids are handed to the UPDATE as an array, so that it finds its
// rows through the primary key: joining with the CTE let the planner hash
// a scan of the whole table, sent rows included.
func (q claimQuery) postgres(db *gorm.DB) ([]sendRow, error) {
	var rows []sendRow
	stmt, args := q.postgresStmt()
	err := db.Raw(stmt, args...).Scan(&rows).Error
	return rows, err
}

// postgresStmt is the PostgreSQL claim statement and its arguments.
func (q claimQuery) postgresStmt() (string, []any) {
	stmt := "WITH c AS (" + q.pick + " FOR UPDATE SKIP LOCKED) UPDATE " + q.table +
		" SET claimed_by = ?, claim_until = " + q.until + ", updated_at = " + q.now +
		" WHERE id = ANY(ARRAY(SELECT id FROM c)) RETURNING " + sendColumns
	return stmt, append(append([]any{}, q.pickArgs...), q.token, q.untilArg)
}

// mysql claims without UPDATE ... RETURNING, which MySQL lacks: it locks
// with SKIP LOCKED in a short READ COMMITTED transaction (no gap locks to
// block Enqueue), stamps the claim and commits.
func (q claimQuery) mysql(db *gorm.DB) ([]sendRow, error) {
	var rows []sendRow
	err := db.Transaction(func(tx *gorm.DB) error {
		stmt := "SELECT " + "o." + strings.ReplaceAll(sendColumns, ", ", ", o.") + " FROM " + q.table + " o WHERE " + q.where +
			" ORDER BY o.next_attempt_at, o.id LIMIT ? FOR UPDATE SKIP LOCKED"
		if err := tx.Raw(stmt, q.pickArgs...).Scan(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		ids := make([]int64, len(rows))
		for i := range rows {
			ids[i] = rows[i].ID
		}
		return tx.Exec("UPDATE "+q.table+" SET claimed_by = ?, claim_until = "+q.until+", updated_at = "+q.now+" WHERE id IN ?",
			q.token, q.untilArg, ids).Error
	}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	return rows, err
}

// sqlite claims with a single UPDATE ... RETURNING that picks and claims
// atomically: SQLite has one writer at a time.
func (q claimQuery) sqlite(db *gorm.DB) ([]sendRow, error) {
	var rows []sendRow
	stmt := "UPDATE " + q.table + " SET claimed_by = ?, claim_until = " + q.until + ", updated_at = " + q.now +
		" WHERE id IN (" + q.pick + ") RETURNING " + sendColumns
	args := append([]any{q.token, q.untilArg}, q.pickArgs...)
	err := db.Raw(stmt, args...).Scan(&rows).Error
	return rows, err
}
