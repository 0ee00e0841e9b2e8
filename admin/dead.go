package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// DeadState selects dead letters by whether they were redriven.
type DeadState int

const (
	// DeadWaiting selects dead letters not yet redriven. The default.
	DeadWaiting DeadState = iota
	// DeadRedriven selects dead letters already redriven.
	DeadRedriven
	// DeadAny selects both.
	DeadAny
)

// DeadFilter selects dead letters. Fields combine with AND; empty fields
// do not restrict.
type DeadFilter struct {
	// IDs selects these dead letters.
	IDs []int64 `json:"ids,omitempty"`
	// Group and Topic select one consumer group and one topic.
	Group string `json:"group,omitempty"`
	Topic string `json:"topic,omitempty"`
	// MessageID and Key select one message ID and one dedup key.
	MessageID string `json:"message_id,omitempty"`
	Key       string `json:"key,omitempty"`
	// Error selects reasons containing this text, ignoring case.
	Error string `json:"error,omitempty"`
	// Signature selects reasons with this error signature (see
	// Signature).
	Signature string `json:"signature,omitempty"`
	// Since and Until bound the time of death (Since inclusive, Until
	// exclusive) when non-zero.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// State selects by redrive state. Defaults to DeadWaiting.
	State DeadState `json:"state,omitempty"`
	// All must be set for a bulk action with no other selector, so that
	// acting on everything is never an accident.
	All bool `json:"all,omitempty"`
}

func (f DeadFilter) empty() bool {
	return len(f.IDs) == 0 && f.Group == "" && f.Topic == "" && f.MessageID == "" && f.Key == "" &&
		f.Error == "" && f.Signature == "" && f.Since.IsZero() && f.Until.IsZero()
}

// String describes the filter for the audit log.
func (f DeadFilter) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+strconv.Quote(v))
		}
	}
	if len(f.IDs) > 0 {
		ids := make([]string, len(f.IDs))
		for i, id := range f.IDs {
			ids[i] = strconv.FormatInt(id, 10)
		}
		parts = append(parts, "ids="+strings.Join(ids, ","))
	}
	add("group", f.Group)
	add("topic", f.Topic)
	add("message_id", f.MessageID)
	add("key", f.Key)
	add("error", f.Error)
	add("signature", f.Signature)
	if !f.Since.IsZero() {
		add("since", f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		add("until", f.Until.UTC().Format(time.RFC3339))
	}
	switch f.State {
	case DeadRedriven:
		parts = append(parts, "state=redriven")
	case DeadAny:
		parts = append(parts, "state=any")
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, " ")
}

// DeadLetter is a dead letter as an operator sees it. Listings leave Body,
// Properties and History empty; [Admin.DeadLetter] fills them.
type DeadLetter struct {
	ID        int64    `json:"id"`
	Group     string   `json:"group"`
	Key       string   `json:"key"`
	MessageID string   `json:"message_id"`
	Topic     string   `json:"topic"`
	Tags      string   `json:"tags"`
	Keys      []string `json:"keys"`
	// Attempts is the number of attempts made.
	Attempts int `json:"attempts"`
	// Reason is the final error, and Signature its error signature.
	Reason    string `json:"reason"`
	Signature string `json:"signature"`
	// BodySize is the length in bytes of the message's whole body, and
	// BodySHA256 its SHA-256 (hex; empty for letters buried before it was
	// recorded).
	BodySize   int64  `json:"body_size"`
	BodySHA256 string `json:"body_sha256,omitempty"`
	// Truncated is set for a letter that does not hold the whole message
	// (its body was cut to dedup.MaxDeadLetterBody bytes): it can be read
	// and discarded, not redriven.
	Truncated     bool       `json:"truncated,omitempty"`
	FirstFailedAt time.Time  `json:"first_failed_at"`
	DeadAt        time.Time  `json:"dead_at"`
	RedrivenAt    *time.Time `json:"redriven_at,omitempty"`
	// Body, Properties and History are filled by Admin.DeadLetter.
	Body       []byte               `json:"body,omitempty"`
	Properties map[string]string    `json:"properties,omitempty"`
	History    []dedup.AttemptError `json:"history,omitempty"`
}

// Message rebuilds the message a dead letter holds, with its message ID.
func (d *DeadLetter) Message() *idemq.Message {
	dl := dedup.DeadLetter{Group: d.Group, Key: d.Key, MessageID: d.MessageID, Topic: d.Topic, Tags: d.Tags,
		Keys: d.Keys, Body: d.Body, Properties: d.Properties}
	return dl.Message()
}

const deadSummaryCols = "id, consumer_group, dedup_key, message_id, topic, tags, msg_keys, attempts, reason, LENGTH(body), first_failed_at, dead_at, redriven_at, body_size, body_sha256, truncated"

// where builds the SQL condition of f, without the signature (matched in
// Go) and without paging.
func (a *Admin) deadWhere(f DeadFilter) (string, []any) {
	conds := []string{"1 = 1"}
	var args []any
	if len(f.IDs) > 0 {
		conds = append(conds, "id IN ?")
		args = append(args, f.IDs)
	}
	eq := func(col, v string) {
		if v != "" {
			conds = append(conds, col+" = ?")
			args = append(args, v)
		}
	}
	eq("consumer_group", f.Group)
	eq("topic", f.Topic)
	eq("message_id", f.MessageID)
	eq("dedup_key", f.Key)
	if f.Error != "" {
		conds = append(conds, "LOWER(reason) LIKE ? ESCAPE '!'")
		args = append(args, "%"+likeEscape(strings.ToLower(f.Error))+"%")
	}
	if !f.Since.IsZero() {
		conds = append(conds, "dead_at >= ?")
		args = append(args, toMs(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "dead_at < ?")
		args = append(args, toMs(f.Until))
	}
	switch f.State {
	case DeadWaiting:
		conds = append(conds, "redriven_at IS NULL")
	case DeadRedriven:
		conds = append(conds, "redriven_at IS NOT NULL")
	}
	return strings.Join(conds, " AND "), args
}

func likeEscape(s string) string {
	r := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")
	return r.Replace(s)
}

func (a *Admin) scanDead(rows interface{ Scan(...any) error }) (DeadLetter, error) {
	var (
		d         DeadLetter
		keys      string
		stored    *int64
		redriven  *int64
		first     int64
		dead      int64
		whole     int64
		truncated int
	)
	if err := rows.Scan(&d.ID, &d.Group, &d.Key, &d.MessageID, &d.Topic, &d.Tags, &keys, &d.Attempts, &d.Reason,
		&stored, &first, &dead, &redriven, &whole, &d.BodySHA256, &truncated); err != nil {
		return d, err
	}
	_ = json.Unmarshal([]byte(keys), &d.Keys)
	d.BodySize, d.Truncated = whole, truncated != 0
	if d.BodySize == 0 && stored != nil {
		d.BodySize = *stored // buried before the whole size was recorded
	}
	d.FirstFailedAt, d.DeadAt = fromMs(first), fromMs(dead)
	if redriven != nil {
		t := fromMs(*redriven)
		d.RedrivenAt = &t
	}
	d.Signature = Signature(d.Reason)
	return d, nil
}

// deadBatch reads up to limit dead letters matching f in page order after
// cursor, before the signature is matched.
func (a *Admin) deadBatch(ctx context.Context, f DeadFilter, p Page, limit int) ([]DeadLetter, error) {
	where, args := a.deadWhere(f)
	c, arg, order := p.cursor("id")
	if c != "" {
		where += " AND " + c
		args = append(args, arg)
	}
	q := "SELECT " + deadSummaryCols + " FROM " + a.table("dead_letters") + " WHERE " + where + " ORDER BY " + order + " LIMIT ?"
	args = append(args, limit)
	rows, err := a.db.WithContext(ctx).Raw(q, args...).Rows()
	if err != nil {
		return nil, fmt.Errorf("admin: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := a.scanDead(rows)
		if err != nil {
			return nil, fmt.Errorf("admin: list dead letters: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("admin: list dead letters: %w", err)
	}
	return out, nil
}

// eachDead calls fn for every dead letter matching f (signature
// included), in ID order, until fn returns false.
func (a *Admin) eachDead(ctx context.Context, f DeadFilter, p Page, fn func(DeadLetter) bool) error {
	const batch = 500
	for {
		ds, err := a.deadBatch(ctx, f, p, batch)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if f.Signature != "" && d.Signature != f.Signature {
				continue
			}
			if !fn(d) {
				return nil
			}
		}
		if len(ds) < batch {
			return nil
		}
		p.Cursor = ds[len(ds)-1].ID
	}
}

// ListDead lists dead letters matching f, one page at a time, without
// bodies. next is the cursor of the following page, or 0 after the last.
func (a *Admin) ListDead(ctx context.Context, f DeadFilter, p Page) (items []DeadLetter, next int64, err error) {
	p = p.norm()
	if f.Signature == "" {
		items, err = a.deadBatch(ctx, f, p, p.Limit+1)
	} else {
		err = a.eachDead(ctx, f, p, func(d DeadLetter) bool {
			items = append(items, d)
			return len(items) <= p.Limit
		})
	}
	if err != nil {
		return nil, 0, err
	}
	if len(items) > p.Limit {
		items = items[:p.Limit]
		next = items[len(items)-1].ID
	}
	return items, next, nil
}

// CountDead returns how many dead letters match f: what a bulk action
// with the same filter touches.
func (a *Admin) CountDead(ctx context.Context, f DeadFilter) (int64, error) {
	if f.Signature == "" {
		where, args := a.deadWhere(f)
		var n int64
		if err := a.db.WithContext(ctx).Raw("SELECT COUNT(*) FROM "+a.table("dead_letters")+" WHERE "+where, args...).Scan(&n).Error; err != nil {
			return 0, fmt.Errorf("admin: count dead letters: %w", err)
		}
		return n, nil
	}
	var n int64
	err := a.eachDead(ctx, f, Page{}, func(DeadLetter) bool { n++; return true })
	return n, err
}

// DeadLetter returns one dead letter in full: body, properties and error
// history.
func (a *Admin) DeadLetter(ctx context.Context, id int64) (*DeadLetter, error) {
	ds, err := a.deadBatch(ctx, DeadFilter{IDs: []int64{id}, State: DeadAny}, Page{}, 1)
	if err != nil {
		return nil, err
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("%w: dead letter %d", ErrNotFound, id)
	}
	d := ds[0]
	var (
		body        []byte
		props, hist string
	)
	err = a.db.WithContext(ctx).Raw("SELECT body, properties, history FROM "+a.table("dead_letters")+" WHERE id = ?", id).Row().Scan(&body, &props, &hist)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: dead letter %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: read dead letter %d: %w", id, err)
	}
	_ = json.Unmarshal([]byte(props), &d.Properties)
	_ = json.Unmarshal([]byte(hist), &d.History)
	d.Body = body
	return &d, nil
}

// ErrorGroup is the dead letters that share an error signature.
type ErrorGroup struct {
	Signature string `json:"signature"`
	Count     int64  `json:"count"`
	// Example is the reason of the newest dead letter in the group, and
	// ExampleID its ID.
	Example   string `json:"example"`
	ExampleID int64  `json:"example_id"`
	// Groups and Topics are the consumer groups and topics involved.
	Groups  []string  `json:"groups"`
	Topics  []string  `json:"topics"`
	FirstAt time.Time `json:"first_at"`
	LastAt  time.Time `json:"last_at"`
}

// DeadGroups groups the dead letters matching f by error signature, the
// largest group first. Act on a group with DeadFilter.Signature.
func (a *Admin) DeadGroups(ctx context.Context, f DeadFilter) ([]ErrorGroup, error) {
	groups := map[string]*ErrorGroup{}
	sets := map[string][2]map[string]bool{}
	err := a.eachDead(ctx, f, Page{}, func(d DeadLetter) bool {
		g := groups[d.Signature]
		if g == nil {
			g = &ErrorGroup{Signature: d.Signature, FirstAt: d.DeadAt}
			groups[d.Signature] = g
			sets[d.Signature] = [2]map[string]bool{{}, {}}
		}
		g.Count++
		g.Example, g.ExampleID = d.Reason, d.ID
		if d.DeadAt.Before(g.FirstAt) {
			g.FirstAt = d.DeadAt
		}
		if d.DeadAt.After(g.LastAt) {
			g.LastAt = d.DeadAt
		}
		s := sets[d.Signature]
		s[0][d.Group], s[1][d.Topic] = true, true
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]ErrorGroup, 0, len(groups))
	for sig, g := range groups {
		for k := range sets[sig][0] {
			g.Groups = append(g.Groups, k)
		}
		for k := range sets[sig][1] {
			g.Topics = append(g.Topics, k)
		}
		sort.Strings(g.Groups)
		sort.Strings(g.Topics)
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Signature < out[j].Signature
	})
	return out, nil
}

// ActionConfig tunes a bulk action.
type ActionConfig struct {
	// DryRun counts and lists what the action would touch, changes
	// nothing and writes no audit record.
	DryRun bool
}

// ItemError is the failure of one item of a bulk action.
type ItemError struct {
	ID        int64  `json:"id,omitempty"`
	MessageID string `json:"message_id,omitempty"`
	Error     string `json:"error"`
}

// ActionResult reports a bulk action.
type ActionResult struct {
	Action string `json:"action"`
	DryRun bool   `json:"dry_run"`
	// Matched is how many items the filter selected.
	Matched int64 `json:"matched"`
	// Done is how many were redriven or discarded.
	Done int64 `json:"done"`
	// Skipped is how many were left alone because another operator acted
	// on them first (already redriven or gone).
	Skipped int64 `json:"skipped"`
	// Failed lists the items that failed (a publish error, say); they are
	// left as they were.
	Failed []ItemError `json:"failed,omitempty"`
	// IDs are the selected dead letters' IDs (at most 1000), and
	// MessageIDs the selected messages' IDs (at most 1000).
	IDs        []int64  `json:"ids,omitempty"`
	MessageIDs []string `json:"message_ids,omitempty"`
	// AuditID is the audit record written, 0 for a dry run.
	AuditID int64 `json:"audit_id,omitempty"`
}

// deadItem is what the audit log keeps of one dead letter.
type deadItem struct {
	ID        int64  `json:"id"`
	Group     string `json:"group"`
	Key       string `json:"key"`
	MessageID string `json:"message_id"`
	Topic     string `json:"topic"`
	Reason    string `json:"reason"`
}

func (a *Admin) matchDead(ctx context.Context, f DeadFilter) ([]DeadLetter, error) {
	if f.empty() && !f.All {
		return nil, ErrEmptyFilter
	}
	var out []DeadLetter
	err := a.eachDead(ctx, f, Page{}, func(d DeadLetter) bool { out = append(out, d); return true })
	return out, err
}

func resultOf(action string, ds []DeadLetter, dry bool) ActionResult {
	r := ActionResult{Action: action, DryRun: dry, Matched: int64(len(ds))}
	for i, d := range ds {
		if i == maxAuditDetailItems {
			break
		}
		r.IDs = append(r.IDs, d.ID)
		r.MessageIDs = append(r.MessageIDs, d.MessageID)
	}
	return r
}

func items(ds []DeadLetter) []deadItem {
	out := make([]deadItem, 0, min(len(ds), maxAuditDetailItems))
	for i, d := range ds {
		if i == maxAuditDetailItems {
			break
		}
		out = append(out, deadItem{d.ID, d.Group, d.Key, d.MessageID, d.Topic, d.Reason})
	}
	return out
}

// RedriveDead publishes the dead letters matching f again through
// Config.Sender (or writes them into Config.Outbox), each with its
// original message ID, after clearing its key's dead mark and attempts so
// that the consumer processes it once. A
// dead letter already redriven (by another operator, say) is skipped; one
// whose publish fails stays waiting and is listed in Failed. One audit
// record is written unless it is a dry run.
func (a *Admin) RedriveDead(ctx context.Context, f DeadFilter, opts ActionConfig) (ActionResult, error) {
	if f.State != DeadWaiting {
		return ActionResult{}, errors.New("admin: only dead letters waiting for a redrive can be redriven")
	}
	ds, err := a.matchDead(ctx, f)
	if err != nil {
		return ActionResult{}, err
	}
	res := resultOf(ActionDeadRedrive, ds, opts.DryRun)
	if opts.DryRun {
		return res, nil
	}
	if a.cfg.Sender == nil && a.cfg.Outbox == nil {
		return res, ErrNoSender
	}
	var done []DeadLetter
	for _, d := range ds {
		if err := ctx.Err(); err != nil {
			res.Failed = append(res.Failed, ItemError{ID: d.ID, MessageID: d.MessageID, Error: err.Error()})
			continue
		}
		var err error
		if a.cfg.Outbox != nil {
			err = a.redriveToOutbox(ctx, d.ID)
		} else {
			err = a.store.Redrive(ctx, d.ID, dedup.Publisher(a.cfg.Sender))
		}
		switch {
		case err == nil:
			res.Done++
			done = append(done, d)
		case errors.Is(err, dedup.ErrAlreadyRedriven), errors.Is(err, dedup.ErrNotFound):
			res.Skipped++
		default:
			res.Failed = append(res.Failed, ItemError{ID: d.ID, MessageID: d.MessageID, Error: err.Error()})
		}
	}
	detail := map[string]any{"redriven": items(done), "failed": res.Failed, "skipped": res.Skipped}
	id, err := a.record(ctx, a.db, ActionDeadRedrive, f.String(), res.Done, detail)
	if err != nil {
		return res, err
	}
	res.AuditID = id
	return res, nil
}

// DiscardDead deletes the dead letters matching f and writes an audit
// record of what it deleted, in one transaction. Their keys stay marked
// dead, so a late redelivery of a discarded message is still skipped.
func (a *Admin) DiscardDead(ctx context.Context, f DeadFilter, opts ActionConfig) (ActionResult, error) {
	ds, err := a.matchDead(ctx, f)
	if err != nil {
		return ActionResult{}, err
	}
	res := resultOf(ActionDeadDiscard, ds, opts.DryRun)
	if opts.DryRun || len(ds) == 0 {
		if !opts.DryRun {
			id, err := a.record(ctx, a.db, ActionDeadDiscard, f.String(), 0, map[string]any{"discarded": []deadItem{}})
			res.AuditID = id
			return res, err
		}
		return res, nil
	}
	err = a.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var deleted int64
		var gone []DeadLetter
		for start := 0; start < len(ds); start += 500 {
			chunk := ds[start:min(start+500, len(ds))]
			ids := make([]int64, len(chunk))
			for i, d := range chunk {
				ids[i] = d.ID
			}
			// Read what is still there (another operator may have
			// discarded some), then delete it.
			var present []int64
			if err := tx.Raw("SELECT id FROM "+a.table("dead_letters")+" WHERE id IN ?"+a.forUpdate(), ids).Scan(&present).Error; err != nil {
				return err
			}
			have := make(map[int64]bool, len(present))
			for _, id := range present {
				have[id] = true
			}
			for _, d := range chunk {
				if have[d.ID] {
					gone = append(gone, d)
				}
			}
			if len(present) == 0 {
				continue
			}
			r := tx.Exec("DELETE FROM "+a.table("dead_letters")+" WHERE id IN ?", present)
			if r.Error != nil {
				return r.Error
			}
			deleted += r.RowsAffected
		}
		res.Done = deleted
		res.Skipped = int64(len(ds)) - deleted
		id, err := a.record(ctx, tx, ActionDeadDiscard, f.String(), deleted, map[string]any{"discarded": items(gone)})
		res.AuditID = id
		return err
	})
	if err != nil {
		return ActionResult{Action: ActionDeadDiscard, Matched: int64(len(ds))}, fmt.Errorf("admin: discard dead letters: %w", err)
	}
	return res, nil
}

func (a *Admin) forUpdate() string {
	if a.dialect == "sqlite" {
		return ""
	}
	return " FOR UPDATE"
}

// redriveToOutbox marks one dead letter redriven, clears its key's dead
// mark and attempts, and writes its message into the outbox, in one
// transaction. A message whose ID is still in the outbox (sent and not yet
// cleaned up, or failed) is made pending again instead: the outbox keeps
// one row per message ID.
func (a *Admin) redriveToOutbox(ctx context.Context, id int64) error {
	d, err := a.DeadLetter(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: %w", dedup.ErrNotFound, err)
		}
		return err
	}
	if d.Truncated {
		return fmt.Errorf("admin: dead letter %d: %w", id, dedup.ErrDeadLetterIncomplete)
	}
	ob := a.cfg.Outbox
	return a.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The key's lock, the one burials and the ledger's redrive take.
		var status []int
		if err := tx.Raw("SELECT status FROM "+a.table("dedup")+" WHERE consumer_group = ? AND dedup_key = ?"+a.forUpdate(),
			d.Group, d.Key).Scan(&status).Error; err != nil {
			return err
		}
		r := tx.Exec("UPDATE "+a.table("dead_letters")+" SET redriven_at = "+a.nowMs()+" WHERE id = ? AND redriven_at IS NULL", id)
		if r.Error != nil {
			return r.Error
		}
		if r.RowsAffected == 0 {
			return dedup.ErrAlreadyRedriven
		}
		// Other waiting letters of the same message (the same message
		// ID, or the same body re-sent under another) go with it: one
		// message is sent once. Letters of other messages under the same
		// key (a key mapping bug) keep waiting.
		if err := tx.Exec("UPDATE "+a.table("dead_letters")+" SET redriven_at = "+a.nowMs()+
			" WHERE consumer_group = ? AND dedup_key = ? AND redriven_at IS NULL"+
			" AND ((message_id <> '' AND message_id = ?) OR (body_sha256 <> '' AND body_sha256 = ?))",
			d.Group, d.Key, d.MessageID, d.BodySHA256).Error; err != nil {
			return err
		}
		if err := tx.Exec("DELETE FROM "+a.table("dedup")+" WHERE consumer_group = ? AND dedup_key = ? AND status = 3", d.Group, d.Key).Error; err != nil {
			return err
		}
		if err := tx.Exec("DELETE FROM "+a.table("attempts")+" WHERE consumer_group = ? AND dedup_key = ?", d.Group, d.Key).Error; err != nil {
			return err
		}
		msg := d.Message()
		if msg.ID != "" {
			// Due at once: created_at is in the past, in the column's own
			// representation on every database.
			r := tx.Exec("UPDATE "+ob.Table()+" SET status = 0, attempts = 0, next_attempt_at = created_at, last_error = ''"+
				" WHERE message_id = ? AND status <> 0", msg.ID)
			if r.Error != nil {
				return r.Error
			}
			var n int64
			if err := tx.Raw("SELECT COUNT(*) FROM "+ob.Table()+" WHERE message_id = ?", msg.ID).Scan(&n).Error; err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
		}
		return ob.Enqueue(tx, msg)
	})
}
