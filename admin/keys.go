package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/idemq/idemq/dedup"
)

// KeyStatus is the state of a dedup key.
type KeyStatus string

// Key states.
const (
	// KeyNew is a key with no dedup row: the next delivery runs the
	// handler.
	KeyNew KeyStatus = "new"
	// KeyProcessing is a key claimed by a lease-mode consumer.
	KeyProcessing KeyStatus = "processing"
	// KeyDone is a key processed successfully: deliveries are duplicates.
	KeyDone KeyStatus = "done"
	// KeyDead is a dead-lettered key: deliveries are skipped until a
	// redrive.
	KeyDead KeyStatus = "dead"
)

// KeyState is everything recorded about one dedup key.
type KeyState struct {
	Group  string    `json:"group"`
	Key    string    `json:"key"`
	Status KeyStatus `json:"status"`
	// Owner and LeaseUntil are the lease of a processing key; LeaseExpired
	// says whether the lease ran out by the database clock (the next
	// delivery takes it over).
	Owner        string     `json:"owner,omitempty"`
	LeaseUntil   *time.Time `json:"lease_until,omitempty"`
	LeaseExpired bool       `json:"lease_expired,omitempty"`
	MessageID    string     `json:"message_id,omitempty"`
	Fingerprint  string     `json:"fingerprint,omitempty"`
	CreatedAt    *time.Time `json:"created_at,omitempty"`
	UpdatedAt    *time.Time `json:"updated_at,omitempty"`
	// Attempts is the key's failure record, nil when none is recorded.
	Attempts *Attempt `json:"attempts,omitempty"`
	// DeadLetters are the key's dead letters (redriven ones too), newest
	// first, without bodies.
	DeadLetters []DeadLetter `json:"dead_letters,omitempty"`
}

// Key returns the state of the dedup key (group, key).
func (a *Admin) Key(ctx context.Context, group, key string) (*KeyState, error) {
	if err := (dedup.Request{Group: group, Key: key}).Validate(); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	st := &KeyState{Group: group, Key: key, Status: KeyNew}
	var (
		status                   int
		leaseUntil, created, upd int64
		now                      int64
	)
	row := a.db.WithContext(ctx).Raw("SELECT status, owner, lease_until, message_id, fingerprint, created_at, updated_at, "+a.nowMs()+
		" FROM "+a.table("dedup")+" WHERE consumer_group = ? AND dedup_key = ?", group, key).Row()
	err := row.Scan(&status, &st.Owner, &leaseUntil, &st.MessageID, &st.Fingerprint, &created, &upd, &now)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("admin: read key: %w", err)
	default:
		c, u := fromMs(created), fromMs(upd)
		st.CreatedAt, st.UpdatedAt = &c, &u
		switch status {
		case 1:
			st.Status = KeyProcessing
			l := fromMs(leaseUntil)
			st.LeaseUntil = &l
			st.LeaseExpired = leaseUntil <= now
		case 2:
			st.Status = KeyDone
			st.Owner = ""
		case 3:
			st.Status = KeyDead
			st.Owner = ""
		default:
			st.Status = KeyStatus(fmt.Sprintf("status(%d)", status))
		}
	}
	at, err := a.attempts(ctx, "consumer_group = ? AND dedup_key = ?", []any{group, key}, "last_at", 1, 0)
	if err != nil {
		return nil, err
	}
	if len(at) > 0 {
		st.Attempts = &at[0]
	}
	st.DeadLetters, _, err = a.ListDead(ctx, DeadFilter{Group: group, Key: key, State: DeadAny}, Page{Newest: true, Limit: 20})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Attempt is the failure record of a key that failed and waits for a
// retry.
type Attempt struct {
	Group string `json:"group"`
	Key   string `json:"key"`
	// Count is the number of failed attempts so far.
	Count     int                  `json:"count"`
	LastError string               `json:"last_error"`
	History   []dedup.AttemptError `json:"history"`
	FirstAt   time.Time            `json:"first_at"`
	LastAt    time.Time            `json:"last_at"`
	// Stale is set when the last failure is older than the stale threshold:
	// the broker has probably stopped redelivering the message, which is
	// neither done nor dead-lettered.
	Stale bool `json:"stale"`
}

// AttemptFilter selects attempts.
type AttemptFilter struct {
	// Group restricts the listing to one consumer group when non-empty.
	Group string
	// StaleOnly lists only stale attempts (see Attempt.Stale).
	StaleOnly bool
	// StaleAfter overrides Config.StaleAfter when positive.
	StaleAfter time.Duration
	// Offset skips this many attempts (paging); Limit caps the listing
	// (defaults to 100, at most 1000).
	Offset, Limit int
}

// Attempts lists keys with recorded failures that are neither done nor
// dead-lettered, oldest last failure first: messages waiting for a retry
// and, with StaleOnly, those the broker stopped redelivering.
func (a *Admin) Attempts(ctx context.Context, f AttemptFilter) ([]Attempt, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, 1000)
	stale := a.cfg.StaleAfter
	if f.StaleAfter > 0 {
		stale = f.StaleAfter
	}
	conds := []string{"1 = 1"}
	var args []any
	if f.Group != "" {
		conds = append(conds, "consumer_group = ?")
		args = append(args, f.Group)
	}
	if f.StaleOnly {
		conds = append(conds, "last_at < "+a.nowMs()+" - ?")
		args = append(args, stale.Milliseconds())
	}
	return a.attemptsStale(ctx, strings.Join(conds, " AND "), args, "last_at", f.Limit, f.Offset, stale)
}

func (a *Admin) attempts(ctx context.Context, where string, args []any, order string, limit, offset int) ([]Attempt, error) {
	return a.attemptsStale(ctx, where, args, order, limit, offset, a.cfg.StaleAfter)
}

func (a *Admin) attemptsStale(ctx context.Context, where string, args []any, order string, limit, offset int, stale time.Duration) ([]Attempt, error) {
	q := "SELECT consumer_group, dedup_key, attempts, last_error, history, first_at, last_at, " + a.nowMs() +
		" FROM " + a.table("attempts") + " WHERE " + where + " ORDER BY " + order + ", consumer_group, dedup_key LIMIT ? OFFSET ?"
	rows, err := a.db.WithContext(ctx).Raw(q, append(args, limit, offset)...).Rows()
	if err != nil {
		return nil, fmt.Errorf("admin: list attempts: %w", err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var (
			at                 Attempt
			hist               string
			first, last, nowMs int64
		)
		if err := rows.Scan(&at.Group, &at.Key, &at.Count, &at.LastError, &hist, &first, &last, &nowMs); err != nil {
			return nil, fmt.Errorf("admin: list attempts: %w", err)
		}
		_ = json.Unmarshal([]byte(hist), &at.History)
		at.FirstAt, at.LastAt = fromMs(first), fromMs(last)
		at.Stale = nowMs-last > stale.Milliseconds()
		out = append(out, at)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("admin: list attempts: %w", err)
	}
	return out, nil
}

// Lease is a key claimed by a lease-mode consumer.
type Lease struct {
	Group      string    `json:"group"`
	Key        string    `json:"key"`
	Owner      string    `json:"owner"`
	MessageID  string    `json:"message_id"`
	LeaseUntil time.Time `json:"lease_until"`
	// Expired says the lease ran out by the database clock: its holder
	// died or stalled, and the next delivery takes the key over.
	Expired   bool      `json:"expired"`
	CreatedAt time.Time `json:"created_at"`
}

// Processing lists keys claimed by lease-mode consumers (in progress, or
// left by a holder that died), oldest claim first, at most limit (defaults
// to 100, at most 1000). group restricts the listing when non-empty.
func (a *Admin) Processing(ctx context.Context, group string, limit int) ([]Lease, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	q := "SELECT consumer_group, dedup_key, owner, message_id, lease_until, created_at, " + a.nowMs() +
		" FROM " + a.table("dedup") + " WHERE status = 1"
	var args []any
	if group != "" {
		q += " AND consumer_group = ?"
		args = append(args, group)
	}
	q += " ORDER BY created_at LIMIT ?"
	rows, err := a.db.WithContext(ctx).Raw(q, append(args, limit)...).Rows()
	if err != nil {
		return nil, fmt.Errorf("admin: list processing keys: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var (
			l                   Lease
			until, created, now int64
		)
		if err := rows.Scan(&l.Group, &l.Key, &l.Owner, &l.MessageID, &until, &created, &now); err != nil {
			return nil, fmt.Errorf("admin: list processing keys: %w", err)
		}
		l.LeaseUntil, l.CreatedAt, l.Expired = fromMs(until), fromMs(created), until <= now
		out = append(out, l)
	}
	return out, rows.Err()
}
