package sqldedup

import (
	"context"
	"database/sql"

	"github.com/idemq/idemq/dedup"
)

// doneAlready answers a duplicate of a finished key with one indexed read
// (the primary key), before any transaction is opened: ok reports that the
// key's row is committed DONE or DEAD, and res is the Duplicate answer the
// transactional path would give for it. Anything else (no row, a row in
// another state, a failed read) leaves the decision to the transactional
// insert, which stays the authority: a read outside a transaction sees only
// committed rows, and a committed DONE or DEAD row never goes back to
// anything but deletion by retention, which the insert would then find.
func (s *Store) doneAlready(ctx context.Context, req dedup.Request) (res dedup.Result, ok bool) {
	// The statement is fixed and runs for every message: it goes to the
	// driver directly, without gorm's statement building.
	sqlDB, err := s.db.DB()
	if err != nil {
		return dedup.Result{}, false
	}
	var st rowState
	var fp sql.NullString
	if err := sqlDB.QueryRowContext(ctx, s.sql.selectDone, req.Group, req.Key).Scan(&st.Status, &fp); err != nil {
		return dedup.Result{}, false // no row, or a failed read: the transaction decides
	}
	if st.Status != statusDone && st.Status != statusDead {
		return dedup.Result{}, false
	}
	st.Fingerprint = fp.String
	return s.stateResult(req, st), true
}
