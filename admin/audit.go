package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Actions recorded in the audit log.
const (
	ActionDeadRedrive    = "dead.redrive"
	ActionDeadDiscard    = "dead.discard"
	ActionOutboxRedrive  = "outbox.redrive"
	ActionOutboxDiscard  = "outbox.discard"
	ActionMigrate        = "migrate"
	maxAuditDetailItems  = 1000
	maxAuditTargetLength = 1000
)

// AuditRecord is one operator action.
type AuditRecord struct {
	ID int64 `json:"id"`
	// At is when the action ran, by the database clock.
	At time.Time `json:"at"`
	// Actor is who ran it (see WithActor).
	Actor string `json:"actor"`
	// Action is what ran, one of the Action constants.
	Action string `json:"action"`
	// Target describes the selection: the filter or the IDs.
	Target string `json:"target"`
	// Count is how many items the action changed.
	Count int64 `json:"count"`
	// Detail holds the action's items (at most 1000) and failures, as
	// JSON.
	Detail json.RawMessage `json:"detail"`
}

// AuditFilter selects audit records.
type AuditFilter struct {
	// Action and Actor restrict the listing when non-empty.
	Action string
	Actor  string
	// Since and Until bound At (Since inclusive, Until exclusive) when
	// non-zero.
	Since, Until time.Time
}

// Page pages a listing. Listings are ordered by ID, newest first when
// Newest is set; Cursor is the Next of the previous page.
type Page struct {
	// Cursor continues after this ID (0: from the start).
	Cursor int64
	// Limit caps the page. Defaults to 100; at most 1000.
	Limit int
	// Newest lists the highest IDs first.
	Newest bool
}

func (p Page) norm() Page {
	if p.Limit <= 0 {
		p.Limit = 100
	}
	if p.Limit > 1000 {
		p.Limit = 1000
	}
	return p
}

// cursor returns the cursor condition and order for an id column.
func (p Page) cursor(col string) (cond string, arg any, order string) {
	if p.Newest {
		if p.Cursor > 0 {
			return col + " < ?", p.Cursor, col + " DESC"
		}
		return "", nil, col + " DESC"
	}
	return col + " > ?", p.Cursor, col
}

// record writes one audit record inside tx and returns its ID.
func (a *Admin) record(ctx context.Context, tx *gorm.DB, action, target string, count int64, detail any) (int64, error) {
	b, err := json.Marshal(detail)
	if err != nil {
		return 0, fmt.Errorf("admin: audit detail: %w", err)
	}
	if len(target) > maxAuditTargetLength {
		target = target[:maxAuditTargetLength]
	}
	row := struct {
		ID     int64 `gorm:"primaryKey;autoIncrement"`
		At     int64
		Actor  string
		Action string
		Target string
		Count  int64
		Detail string
	}{Actor: a.actor(ctx), Action: action, Target: target, Count: count, Detail: string(b)}
	if err := tx.WithContext(ctx).Raw("SELECT " + a.nowMs()).Scan(&row.At).Error; err != nil {
		return 0, fmt.Errorf("admin: audit: %w", err)
	}
	if err := tx.WithContext(ctx).Table(a.table("audit_log")).Create(&row).Error; err != nil {
		return 0, fmt.Errorf("admin: audit: %w", err)
	}
	return row.ID, nil
}

// Audit lists audit records matching f.
func (a *Admin) Audit(ctx context.Context, f AuditFilter, p Page) ([]AuditRecord, int64, error) {
	p = p.norm()
	var conds []string
	var args []any
	if f.Action != "" {
		conds = append(conds, "action = ?")
		args = append(args, f.Action)
	}
	if f.Actor != "" {
		conds = append(conds, "actor = ?")
		args = append(args, f.Actor)
	}
	if !f.Since.IsZero() {
		conds = append(conds, "at >= ?")
		args = append(args, toMs(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "at < ?")
		args = append(args, toMs(f.Until))
	}
	c, arg, order := p.cursor("id")
	if c != "" {
		conds = append(conds, c)
		args = append(args, arg)
	}
	q := "SELECT id, at, actor, action, target, count, detail FROM " + a.table("audit_log")
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY " + order + " LIMIT ?"
	args = append(args, p.Limit+1)
	rows, err := a.db.WithContext(ctx).Raw(q, args...).Rows()
	if err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		var r AuditRecord
		var at int64
		var detail string
		if err := rows.Scan(&r.ID, &at, &r.Actor, &r.Action, &r.Target, &r.Count, &detail); err != nil {
			return nil, 0, fmt.Errorf("admin: audit: %w", err)
		}
		r.At = fromMs(at)
		if json.Valid([]byte(detail)) {
			r.Detail = json.RawMessage(detail)
		} else {
			r.Detail, _ = json.Marshal(detail)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	var next int64
	if len(out) > p.Limit {
		out = out[:p.Limit]
		next = out[len(out)-1].ID
	}
	return out, next, nil
}
