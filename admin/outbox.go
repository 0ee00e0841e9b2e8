package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/producer/outbox"
)

// OutboxEntry is one outbox row as an operator sees it. Listings leave
// Body and Properties empty; [Admin.OutboxEntry] fills them.
type OutboxEntry struct {
	ID          int64    `json:"id"`
	MessageID   string   `json:"message_id"`
	Topic       string   `json:"topic"`
	Tags        string   `json:"tags"`
	Keys        []string `json:"keys"`
	ShardingKey string   `json:"sharding_key,omitempty"`
	DelayLevel  int      `json:"delay_level,omitempty"`
	BodySize    int      `json:"body_size"`
	// Status is "pending", "sent" or "failed"; Claimed is set for a
	// pending row a relay holds right now.
	Status          string     `json:"status"`
	Claimed         bool       `json:"claimed"`
	Attempts        int        `json:"attempts"`
	LastError       string     `json:"last_error"`
	NextAttemptAt   time.Time  `json:"next_attempt_at"`
	ClaimedBy       string     `json:"claimed_by,omitempty"`
	ClaimUntil      *time.Time `json:"claim_until,omitempty"`
	BrokerMessageID string     `json:"broker_message_id,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	SentAt          *time.Time `json:"sent_at,omitempty"`
	// Age is how long ago the row was enqueued, by the database clock.
	Age        time.Duration     `json:"age_ns"`
	Body       []byte            `json:"body,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
}

// OutboxStats summarises the outbox.
type OutboxStats struct {
	// Pending is the backlog: rows not yet sent, claimed ones included.
	Pending int64 `json:"pending"`
	// Claimed is the pending rows a relay holds right now.
	Claimed int64 `json:"claimed"`
	// Sent is the sent rows not yet cleaned up.
	Sent int64 `json:"sent"`
	// Failed is the rows left for an operator.
	Failed int64 `json:"failed"`
	// OldestPendingAge is the age of the oldest pending row by the database
	// clock; 0 without a backlog.
	OldestPendingAge time.Duration `json:"oldest_pending_age_ns"`
}

// OutboxFilter selects outbox rows in a listing.
type OutboxFilter struct {
	// Statuses are "pending", "sent", "failed" (empty: all).
	Statuses []string
	// Topic restricts the listing to one topic when non-empty.
	Topic string
}

// OutboxSelector selects failed outbox rows for a redrive or a discard.
// Exactly one of its fields must be set.
type OutboxSelector struct {
	// MessageIDs selects these messages.
	MessageIDs []string `json:"message_ids,omitempty"`
	// Topic selects every failed row of one topic.
	Topic string `json:"topic,omitempty"`
	// All selects every failed row.
	All bool `json:"all,omitempty"`
}

func (s OutboxSelector) cond() (string, []any, error) {
	n := 0
	var cond string
	var args []any
	if len(s.MessageIDs) > 0 {
		n++
		cond, args = "message_id IN ?", []any{s.MessageIDs}
	}
	if s.Topic != "" {
		n++
		cond, args = "topic = ?", []any{s.Topic}
	}
	if s.All {
		n++
		cond = "1 = 1"
	}
	if n == 0 {
		return "", nil, ErrEmptyFilter
	}
	if n > 1 {
		return "", nil, errors.New("admin: set exactly one of MessageIDs, Topic, All")
	}
	return cond, args, nil
}

// String describes the selection for the audit log.
func (s OutboxSelector) String() string {
	switch {
	case len(s.MessageIDs) > 0:
		return "message_ids=" + strings.Join(s.MessageIDs, ",")
	case s.Topic != "":
		return fmt.Sprintf("topic=%q", s.Topic)
	}
	return "all"
}

type refuseIDs struct{}

func (refuseIDs) NextID() (string, error) {
	return "", errors.New("admin: the outbox admin never issues message IDs")
}

func (a *Admin) outbox(ctx context.Context) (*outbox.Outbox, error) {
	if !a.hasTable(ctx, "outbox") {
		return nil, fmt.Errorf("%w: %s", ErrNoTable, a.table("outbox"))
	}
	ob, err := outbox.New(a.db, outbox.Config{IDSource: refuseIDs{}, TablePrefix: a.prefix, Logger: a.cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ob, nil
}

func parseStatus(s string) (outbox.Status, error) {
	switch s {
	case "pending":
		return outbox.StatusPending, nil
	case "sent":
		return outbox.StatusSent, nil
	case "failed":
		return outbox.StatusFailed, nil
	}
	return 0, fmt.Errorf("admin: unknown outbox status %q (want pending, sent or failed)", s)
}

func toEntry(e outbox.Entry, now time.Time) OutboxEntry {
	return OutboxEntry{
		ID: e.ID, MessageID: e.MessageID, Topic: e.Topic, Tags: e.Tags, Keys: e.Keys, ShardingKey: e.ShardingKey,
		DelayLevel: e.DelayLevel, BodySize: e.BodySize, Status: e.Status.String(),
		Claimed:  e.Status == outbox.StatusPending && e.ClaimUntil != nil && e.ClaimUntil.After(now),
		Attempts: e.Attempts, LastError: e.LastError, NextAttemptAt: e.NextAttemptAt, ClaimedBy: e.ClaimedBy,
		ClaimUntil: e.ClaimUntil, BrokerMessageID: e.BrokerMessageID, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
		SentAt: e.SentAt, Age: e.Age,
	}
}

// ListOutbox lists outbox rows matching f in ID order, one page at a time
// (p.Newest is not supported here). next is the cursor of the following
// page, or 0 after the last.
func (a *Admin) ListOutbox(ctx context.Context, f OutboxFilter, p Page) ([]OutboxEntry, int64, error) {
	p = p.norm()
	ob, err := a.outbox(ctx)
	if err != nil {
		return nil, 0, err
	}
	var sts []outbox.Status
	for _, s := range f.Statuses {
		st, err := parseStatus(s)
		if err != nil {
			return nil, 0, err
		}
		sts = append(sts, st)
	}
	es, err := ob.List(ctx, outbox.Filter{Statuses: sts, Topic: f.Topic, AfterID: p.Cursor, Limit: p.Limit + 1})
	if err != nil {
		return nil, 0, fmt.Errorf("admin: %w", err)
	}
	now := time.Now()
	out := make([]OutboxEntry, 0, len(es))
	for _, e := range es {
		out = append(out, toEntry(e, now))
	}
	var next int64
	if len(out) > p.Limit {
		out = out[:p.Limit]
		next = out[len(out)-1].ID
	}
	return out, next, nil
}

// OutboxEntry returns one outbox row by message ID, with its body and
// properties.
func (a *Admin) OutboxEntry(ctx context.Context, messageID string) (*OutboxEntry, error) {
	ob, err := a.outbox(ctx)
	if err != nil {
		return nil, err
	}
	e, err := ob.Get(ctx, messageID)
	if errors.Is(err, outbox.ErrNotFound) {
		return nil, fmt.Errorf("%w: outbox message %s", ErrNotFound, messageID)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	out := toEntry(*e, time.Now())
	var row struct {
		Body       []byte
		Properties string
	}
	if err := a.db.WithContext(ctx).Raw("SELECT body, properties FROM "+a.table("outbox")+" WHERE message_id = ?", messageID).Scan(&row).Error; err != nil {
		return nil, fmt.Errorf("admin: read outbox message %s: %w", messageID, err)
	}
	out.Body = row.Body
	_ = json.Unmarshal([]byte(row.Properties), &out.Properties)
	return &out, nil
}

// OutboxStats counts outbox rows by state and measures the backlog's age.
func (a *Admin) OutboxStats(ctx context.Context) (OutboxStats, error) {
	ob, err := a.outbox(ctx)
	if err != nil {
		return OutboxStats{}, err
	}
	s, err := ob.Stats(ctx)
	if err != nil {
		return OutboxStats{}, fmt.Errorf("admin: %w", err)
	}
	return OutboxStats{Pending: s.Pending, Claimed: s.Claimed, Sent: s.Sent, Failed: s.Failed, OldestPendingAge: s.OldestPendingAge}, nil
}

// outboxItem is what the audit log keeps of one outbox row.
type outboxItem struct {
	ID        int64  `json:"id"`
	MessageID string `json:"message_id"`
	Topic     string `json:"topic"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
}

func (a *Admin) failedOutbox(ctx context.Context, tx *gorm.DB, s OutboxSelector, lock bool) ([]outboxItem, error) {
	cond, args, err := s.cond()
	if err != nil {
		return nil, err
	}
	q := "SELECT id, message_id, topic, attempts, last_error FROM " + a.table("outbox") + " WHERE status = 2 AND " + cond + " ORDER BY id"
	if lock {
		q += a.forUpdate()
	}
	var out []outboxItem
	if err := tx.WithContext(ctx).Raw(q, args...).Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("admin: select failed outbox rows: %w", err)
	}
	return out, nil
}

// CountOutbox returns how many failed rows s selects: what a redrive or a
// discard with the same selector touches.
func (a *Admin) CountOutbox(ctx context.Context, s OutboxSelector) (int64, error) {
	if _, err := a.outbox(ctx); err != nil {
		return 0, err
	}
	its, err := a.failedOutbox(ctx, a.db, s, false)
	return int64(len(its)), err
}

func outboxResult(action string, its []outboxItem, dry bool) ActionResult {
	r := ActionResult{Action: action, DryRun: dry, Matched: int64(len(its))}
	for i, it := range its {
		if i == maxAuditDetailItems {
			break
		}
		r.IDs = append(r.IDs, it.ID)
		r.MessageIDs = append(r.MessageIDs, it.MessageID)
	}
	return r
}

// RedriveOutbox makes the failed outbox rows s selects pending again, due
// now with attempts reset, keeping their message IDs; the relays send
// them. One audit record is written unless it is a dry run.
func (a *Admin) RedriveOutbox(ctx context.Context, s OutboxSelector, opts ActionConfig) (ActionResult, error) {
	ob, err := a.outbox(ctx)
	if err != nil {
		return ActionResult{}, err
	}
	its, err := a.failedOutbox(ctx, a.db, s, false)
	if err != nil {
		return ActionResult{}, err
	}
	res := outboxResult(ActionOutboxRedrive, its, opts.DryRun)
	if opts.DryRun {
		return res, nil
	}
	var rf outbox.RedriveFilter
	switch {
	case len(s.MessageIDs) > 0:
		rf.MessageIDs = s.MessageIDs
	case s.Topic != "":
		rf.Topic = s.Topic
	default:
		rf.All = true
	}
	n, err := ob.Redrive(ctx, rf)
	if err != nil {
		return res, fmt.Errorf("admin: %w", err)
	}
	res.Done = n
	res.Skipped = max(res.Matched-n, 0)
	if len(its) > maxAuditDetailItems {
		its = its[:maxAuditDetailItems]
	}
	id, err := a.record(ctx, a.db, ActionOutboxRedrive, s.String(), n, map[string]any{"selected": its})
	res.AuditID = id
	return res, err
}

// DiscardOutbox deletes the failed outbox rows s selects and writes an
// audit record of them, in one transaction. Pending and sent rows are
// never discarded.
func (a *Admin) DiscardOutbox(ctx context.Context, s OutboxSelector, opts ActionConfig) (ActionResult, error) {
	if _, err := a.outbox(ctx); err != nil {
		return ActionResult{}, err
	}
	if opts.DryRun {
		its, err := a.failedOutbox(ctx, a.db, s, false)
		if err != nil {
			return ActionResult{}, err
		}
		return outboxResult(ActionOutboxDiscard, its, true), nil
	}
	var res ActionResult
	err := a.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		its, err := a.failedOutbox(ctx, tx, s, true)
		if err != nil {
			return err
		}
		res = outboxResult(ActionOutboxDiscard, its, false)
		for start := 0; start < len(its); start += 500 {
			chunk := its[start:min(start+500, len(its))]
			ids := make([]int64, len(chunk))
			for i, it := range chunk {
				ids[i] = it.ID
			}
			r := tx.Exec("DELETE FROM "+a.table("outbox")+" WHERE status = 2 AND id IN ?", ids)
			if r.Error != nil {
				return r.Error
			}
			res.Done += r.RowsAffected
		}
		if len(its) > maxAuditDetailItems {
			its = its[:maxAuditDetailItems]
		}
		if its == nil {
			its = []outboxItem{}
		}
		id, err := a.record(ctx, tx, ActionOutboxDiscard, s.String(), res.Done, map[string]any{"discarded": its})
		res.AuditID = id
		return err
	})
	if err != nil {
		return ActionResult{}, fmt.Errorf("admin: discard outbox rows: %w", err)
	}
	return res, nil
}
