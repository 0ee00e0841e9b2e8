package outbox

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// claimed is the result of one claim: its rows, its token, and when the
// claiming statement was sent.
type claimed struct {
	rows  []sendRow
	token string
	// sentAt is read before the claiming statement is sent: the database
	// set the deadline to its own now + Visibility no earlier than that,
	// so sentAt + Visibility is a deadline the claim is sure to outlast
	// (clock rates aside).
	sentAt time.Time
}

// claim marks up to BatchSize due rows (or only the named ones) as claimed
// by a new claim token until now + Visibility, by the database clock.
func (r *Relay) claim(ctx context.Context, messageIDs []string) (claimed, error) {
	ob := r.ob
	token := fmt.Sprintf("%s#%d", r.cfg.ID, r.seq.Add(1))
	sentAt := time.Now()
	q := r.claimQuery(token, messageIDs)
	var rows []sendRow
	var err error
	db := ob.db.WithContext(ctx)
	switch ob.d.name {
	case DialectPostgres:
		rows, err = q.postgres(db)
	case DialectMySQL:
		rows, err = q.mysql(db)
	default:
		rows, err = q.sqlite(db)
	}
	if err != nil {
		return claimed{}, fmt.Errorf("outbox: claim: %w", err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	if len(rows) > 0 {
		r.claimed.Add(int64(len(rows)))
		if h := r.cfg.hooks.Claimed; h != nil {
			ids := make([]string, len(rows))
			for i := range rows {
				ids[i] = rows[i].MessageID
			}
			h(r.cfg.ID, ids)
		}
	}
	return claimed{rows: rows, token: token, sentAt: sentAt}, nil
}

// claimQuery builds the SQL of a claim by token of up to BatchSize due rows
// (or only the named ones).
func (r *Relay) claimQuery(token string, messageIDs []string) claimQuery {
	ob := r.ob
	now := ob.d.now()
	until, untilArg := ob.d.plus(r.cfg.Visibility)
	limit := r.cfg.BatchSize
	if len(messageIDs) > 0 {
		limit = len(messageIDs)
	}

	where := "o.status = 0 AND o.next_attempt_at <= " + now + " AND (o.claim_until IS NULL OR o.claim_until <= " + now + ")"
	var whereArgs []any
	if len(messageIDs) > 0 {
		where += " AND o.message_id IN ?"
		whereArgs = append(whereArgs, messageIDs)
	}
	if ob.ordered {
		// A row with a sharding key waits for every earlier row of its key
		// that is still pending (claimed or not): at most one row per key
		// is in flight, and rows go out in id order. The redundant
		// "p.sharding_key <> ''" lets the planner use the partial index.
		where += " AND (o.sharding_key = '' OR NOT EXISTS (SELECT 1 FROM " + ob.table +
			" p WHERE p.sharding_key = o.sharding_key AND p.sharding_key <> '' AND p.status = 0 AND p.id < o.id))"
	}
	pick := "SELECT o.id FROM " + ob.table + " o WHERE " + where + " ORDER BY o.next_attempt_at, o.id LIMIT ?"
	pickArgs := append(whereArgs, limit)
	return claimQuery{
		table: ob.table, token: token, now: now, until: until, untilArg: untilArg,
		where: where, pick: pick, pickArgs: pickArgs,
	}
}
