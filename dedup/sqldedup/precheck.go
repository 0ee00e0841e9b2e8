package sqldedup

import (
	"context"

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
	var st rowState
	r := s.db.WithContext(ctx).Raw(s.sql.selectRow, req.Group, req.Key).Scan(&st)
	if r.Error != nil || r.RowsAffected == 0 {
		return dedup.Result{}, false
	}
	if st.Status != statusDone && st.Status != statusDead {
		return dedup.Result{}, false
	}
	return s.stateResult(req, st), true
}
