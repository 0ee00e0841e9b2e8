package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Entry is one outbox row as an operator sees it (without the body).
type Entry struct {
	// ID is the row's sequence number; rows are sent in ID order per
	// sharding key in ordered mode.
	ID          int64
	MessageID   string
	Topic       string
	Tags        string
	Keys        []string
	ShardingKey string
	DelayLevel  int
	BodySize    int
	Status      Status
	// Attempts counts failed sends since the row was enqueued or redriven.
	Attempts int
	// LastError is the most recent send failure.
	LastError string
	// NextAttemptAt is when a pending row is due (again).
	NextAttemptAt time.Time
	// ClaimedBy is the last claim token ("<relay ID>#<n>"), or "".
	ClaimedBy string
	// ClaimUntil is the visibility deadline of a live or stale claim.
	ClaimUntil *time.Time
	// BrokerMessageID is the broker's ID of a sent row.
	BrokerMessageID string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	SentAt          *time.Time
	// Age is how long ago the row was enqueued, by the database clock.
	Age time.Duration
}

// Filter selects rows in List.
type Filter struct {
	// Statuses restricts the listing to these states; empty lists all.
	Statuses []Status
	// Topic restricts the listing to one topic when non-empty.
	Topic string
	// AfterID pages: only rows with a larger ID are listed.
	AfterID int64
	// Limit caps the listing. Defaults to 100.
	Limit int
}

const entryColumns = `id, message_id, topic, tags, msg_keys, sharding_key, delay_level, LENGTH(body), status, attempts,
	last_error, next_attempt_at, claimed_by, claim_until, broker_msg_id, created_at, updated_at, sent_at`

// List returns rows matching f, oldest first.
func (o *Outbox) List(ctx context.Context, f Filter) ([]Entry, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var conds []string
	var args []any
	if len(f.Statuses) > 0 {
		st := make([]int, len(f.Statuses))
		for i, s := range f.Statuses {
			st[i] = int(s)
		}
		conds = append(conds, "status IN ?")
		args = append(args, st)
	}
	if f.Topic != "" {
		conds = append(conds, "topic = ?")
		args = append(args, f.Topic)
	}
	conds = append(conds, "id > ?")
	args = append(args, f.AfterID)
	q := "SELECT " + entryColumns + " FROM " + o.table + " WHERE " + strings.Join(conds, " AND ") + " ORDER BY id LIMIT ?"
	args = append(args, f.Limit)
	return o.entries(ctx, q, args...)
}

// Get returns the row of one message ID, or ErrNotFound.
func (o *Outbox) Get(ctx context.Context, messageID string) (*Entry, error) {
	es, err := o.entries(ctx, "SELECT "+entryColumns+" FROM "+o.table+" WHERE message_id = ?", messageID)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, messageID)
	}
	return &es[0], nil
}

func (o *Outbox) entries(ctx context.Context, q string, args ...any) ([]Entry, error) {
	now, err := o.dbNow(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := o.db.WithContext(ctx).Raw(q, args...).Rows()
	if err != nil {
		return nil, fmt.Errorf("outbox: list: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var (
			e                                  Entry
			keys                               string
			bodySize                           sql.NullInt64
			next, claimUntil, created, updated = o.newTime(), o.newTime(), o.newTime(), o.newTime()
			sent                               = o.newTime()
		)
		if err := rows.Scan(&e.ID, &e.MessageID, &e.Topic, &e.Tags, &keys, &e.ShardingKey, &e.DelayLevel, &bodySize,
			&e.Status, &e.Attempts, &e.LastError, next, &e.ClaimedBy, claimUntil, &e.BrokerMessageID,
			created, updated, sent); err != nil {
			return nil, fmt.Errorf("outbox: list: %w", err)
		}
		if keys != "" {
			_ = json.Unmarshal([]byte(keys), &e.Keys)
		}
		e.BodySize = int(bodySize.Int64)
		e.NextAttemptAt, e.CreatedAt, e.UpdatedAt = next.Time, created.Time, updated.Time
		if claimUntil.Valid {
			t := claimUntil.Time
			e.ClaimUntil = &t
		}
		if sent.Valid {
			t := sent.Time
			e.SentAt = &t
		}
		e.Age = max(now.Sub(e.CreatedAt), 0)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: list: %w", err)
	}
	return out, nil
}

func (o *Outbox) newTime() *dbTime { return &dbTime{mysql: o.d.name == DialectMySQL} }

// dbNow reads the database clock.
func (o *Outbox) dbNow(ctx context.Context) (time.Time, error) {
	t := o.newTime()
	if err := o.db.WithContext(ctx).Raw("SELECT " + o.d.now()).Row().Scan(t); err != nil {
		return time.Time{}, fmt.Errorf("outbox: read database clock: %w", err)
	}
	return t.Time, nil
}

// Stats summarises the outbox.
type Stats struct {
	// Pending is the backlog: rows not yet sent, including claimed ones.
	Pending int64
	// Claimed is the pending rows a relay holds right now.
	Claimed int64
	// Sent is the sent rows not yet cleaned up.
	Sent int64
	// Failed is the rows left for an operator.
	Failed int64
	// OldestPendingAge is the age of the oldest pending row, by the
	// database clock; 0 without a backlog.
	OldestPendingAge time.Duration
}

// Stats counts rows by state and measures the age of the backlog.
func (o *Outbox) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	now, err := o.dbNow(ctx)
	if err != nil {
		return s, err
	}
	q := "SELECT status, COUNT(*), MIN(created_at), SUM(CASE WHEN claim_until > " + o.d.now() +
		" THEN 1 ELSE 0 END) FROM " + o.table + " GROUP BY status"
	rows, err := o.db.WithContext(ctx).Raw(q).Rows()
	if err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			st      Status
			n       int64
			oldest  = o.newTime()
			claimed sql.NullInt64
		)
		if err := rows.Scan(&st, &n, oldest, &claimed); err != nil {
			return s, fmt.Errorf("outbox: stats: %w", err)
		}
		switch st {
		case StatusPending:
			s.Pending, s.Claimed = n, claimed.Int64
			if oldest.Valid {
				s.OldestPendingAge = max(now.Sub(oldest.Time), 0)
			}
		case StatusSent:
			s.Sent = n
		case StatusFailed:
			s.Failed = n
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	return s, nil
}

// RedriveFilter selects failed rows to redrive. Exactly one selector must
// be set.
type RedriveFilter struct {
	// MessageIDs redrives these messages.
	MessageIDs []string
	// Topic redrives every failed row of one topic.
	Topic string
	// All redrives every failed row.
	All bool
}

// Redrive makes failed rows pending again, with attempts reset to 0 and due
// now, keeping their message IDs (so consumers' dedup still recognises a
// message that did arrive). The last error stays until the next outcome.
// It returns the number of rows redriven.
func (o *Outbox) Redrive(ctx context.Context, f RedriveFilter) (int64, error) {
	set := 0
	var cond string
	var arg any
	if len(f.MessageIDs) > 0 {
		set++
		cond, arg = "message_id IN ?", f.MessageIDs
	}
	if f.Topic != "" {
		set++
		cond, arg = "topic = ?", f.Topic
	}
	if f.All {
		set++
		cond = "1 = 1"
	}
	if set == 0 {
		return 0, ErrEmptyFilter
	}
	if set > 1 {
		return 0, errors.New("outbox: redrive filter must set exactly one of MessageIDs, Topic, All")
	}
	now := o.d.now()
	args := []any{}
	if arg != nil {
		args = append(args, arg)
	}
	res := o.db.WithContext(ctx).Exec("UPDATE "+o.table+" SET status = 0, attempts = 0, next_attempt_at = "+now+
		", claim_until = NULL, updated_at = "+now+" WHERE status = 2 AND "+cond, args...)
	if res.Error != nil {
		return 0, fmt.Errorf("outbox: redrive: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// Cleanup deletes sent rows whose sent_at is older than retention by the
// database clock, in statements of at most batch rows, until none is left
// or ctx is done. It returns the number deleted. Pending and failed rows
// are never deleted.
func (o *Outbox) Cleanup(ctx context.Context, retention time.Duration, batch int) (int64, error) {
	if retention < 0 {
		return 0, errors.New("outbox: negative retention")
	}
	if batch < 1 {
		batch = 1000
	}
	cutoff, cutoffArg := o.d.plus(-retention)
	var q string
	if o.d.name == DialectMySQL {
		q = "DELETE FROM " + o.table + " WHERE status = 1 AND sent_at < " + cutoff + " ORDER BY sent_at, id LIMIT ?"
	} else {
		q = "DELETE FROM " + o.table + " WHERE id IN (SELECT id FROM " + o.table +
			" WHERE status = 1 AND sent_at < " + cutoff + " ORDER BY sent_at, id LIMIT ?)"
	}
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		res := o.db.WithContext(ctx).Exec(q, cutoffArg, batch)
		if res.Error != nil {
			return total, fmt.Errorf("outbox: cleanup: %w", res.Error)
		}
		total += res.RowsAffected
		if res.RowsAffected < int64(batch) {
			return total, nil
		}
	}
}
