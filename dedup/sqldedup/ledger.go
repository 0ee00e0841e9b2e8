package sqldedup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// maxErrorLen bounds a stored error message, in bytes.
const maxErrorLen = 2048

func errText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) <= maxErrorLen {
		return s
	}
	s = s[:maxErrorLen]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

func (s *Store) onConflict(cols, update string) string {
	if s.dialect == "mysql" {
		return " ON DUPLICATE KEY UPDATE " + update
	}
	return " ON CONFLICT (" + cols + ") DO NOTHING"
}

func (s *Store) forUpdate() string {
	if s.dialect == "sqlite" {
		return "" // the write transaction already excludes other writers
	}
	return " FOR UPDATE"
}

func validGroupKey(group, key string) error {
	return dedup.Request{Group: group, Key: key}.Validate()
}

type attemptsRow struct {
	Attempts  int
	LastError string
	History   string
	FirstAt   int64
	LastAt    int64
}

// RecordFailure implements dedup.Ledger. It runs in its own transaction.
func (s *Store) RecordFailure(ctx context.Context, group, key string, attempt int, cause error) (dedup.Attempts, error) {
	if err := validGroupKey(group, key); err != nil {
		return dedup.Attempts{}, err
	}
	t := s.prefix + "attempts"
	out := dedup.Attempts{Group: group, Key: key}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now, err := s.now(ctx, tx)
		if err != nil {
			return err
		}
		ins := "INSERT INTO " + t + " (consumer_group, dedup_key, attempts, last_error, history, first_at, last_at) VALUES (?, ?, 0, '', '[]', ?, ?)" +
			s.onConflict("consumer_group, dedup_key", "attempts = attempts")
		if err := tx.Exec(ins, group, key, now, now).Error; err != nil {
			return err
		}
		var row attemptsRow
		if err := tx.Raw("SELECT attempts, last_error, history, first_at, last_at FROM "+t+
			" WHERE consumer_group = ? AND dedup_key = ?"+s.forUpdate(), group, key).Scan(&row).Error; err != nil {
			return err
		}
		var hist []dedup.AttemptError
		if row.History != "" {
			if err := json.Unmarshal([]byte(row.History), &hist); err != nil {
				hist = nil // a damaged history is replaced, not fatal
			}
		}
		count := row.Attempts + 1
		if attempt > count {
			count = attempt
		}
		msg := errText(cause)
		hist = append(hist, dedup.AttemptError{Attempt: count, At: time.UnixMilli(now).UTC(), Error: msg})
		if len(hist) > s.cfg.HistoryLimit {
			hist = hist[len(hist)-s.cfg.HistoryLimit:]
		}
		hb, err := json.Marshal(hist)
		if err != nil {
			return err
		}
		if err := tx.Exec("UPDATE "+t+" SET attempts = ?, last_error = ?, history = ?, last_at = ? WHERE consumer_group = ? AND dedup_key = ?",
			count, msg, string(hb), now, group, key).Error; err != nil {
			return err
		}
		out.Count = count
		out.LastError = msg
		out.History = hist
		out.FirstAt = fromMillis(row.FirstAt)
		out.LastAt = fromMillis(now)
		return nil
	})
	if err != nil {
		return dedup.Attempts{}, fmt.Errorf("sqldedup: record failure: %w", err)
	}
	return out, nil
}

// Attempts returns the failure record of (group, key); Count is 0 when none
// is recorded.
func (s *Store) Attempts(ctx context.Context, group, key string) (dedup.Attempts, error) {
	if err := validGroupKey(group, key); err != nil {
		return dedup.Attempts{}, err
	}
	var row attemptsRow
	r := s.db.WithContext(ctx).Raw("SELECT attempts, last_error, history, first_at, last_at FROM "+s.prefix+"attempts WHERE consumer_group = ? AND dedup_key = ?", group, key).Scan(&row)
	if r.Error != nil {
		return dedup.Attempts{}, fmt.Errorf("sqldedup: read attempts: %w", r.Error)
	}
	out := dedup.Attempts{Group: group, Key: key}
	if r.RowsAffected == 0 {
		return out, nil
	}
	out.Count = row.Attempts
	out.LastError = row.LastError
	_ = json.Unmarshal([]byte(row.History), &out.History)
	out.FirstAt = fromMillis(row.FirstAt)
	out.LastAt = fromMillis(row.LastAt)
	return out, nil
}

// ClearAttempts implements dedup.Ledger.
func (s *Store) ClearAttempts(ctx context.Context, group, key string) error {
	if err := validGroupKey(group, key); err != nil {
		return err
	}
	if err := s.db.WithContext(ctx).Exec("DELETE FROM "+s.prefix+"attempts WHERE consumer_group = ? AND dedup_key = ?", group, key).Error; err != nil {
		return fmt.Errorf("sqldedup: clear attempts: %w", err)
	}
	return nil
}

// MarkDead implements dedup.DeadMarker. A key that is already done or
// claimed keeps its row.
func (s *Store) MarkDead(ctx context.Context, group, key string) error {
	if err := validGroupKey(group, key); err != nil {
		return err
	}
	if err := s.db.WithContext(ctx).Exec(s.sql.insertDead, group, key, "").Error; err != nil {
		return fmt.Errorf("sqldedup: mark dead: %w", err)
	}
	return nil
}

// ClearDead implements dedup.DeadMarker: it removes a dead mark, and only a
// dead mark.
func (s *Store) ClearDead(ctx context.Context, group, key string) error {
	if err := validGroupKey(group, key); err != nil {
		return err
	}
	if err := s.db.WithContext(ctx).Exec(s.sql.clearDead, group, key).Error; err != nil {
		return fmt.Errorf("sqldedup: clear dead: %w", err)
	}
	return nil
}

// deadLetterRow is the gorm model of the dead_letters table.
type deadLetterRow struct {
	ID            int64 `gorm:"primaryKey;autoIncrement"`
	ConsumerGroup string
	DedupKey      string
	MessageID     string
	Topic         string
	Tags          string
	MsgKeys       string
	Body          []byte
	Properties    string
	Attempts      int
	Reason        string
	History       string
	FirstFailedAt int64
	DeadAt        int64
	RedrivenAt    *int64
}

func (r *deadLetterRow) toDeadLetter() dedup.DeadLetter {
	dl := dedup.DeadLetter{
		ID:            r.ID,
		Group:         r.ConsumerGroup,
		Key:           r.DedupKey,
		MessageID:     r.MessageID,
		Topic:         r.Topic,
		Tags:          r.Tags,
		Body:          r.Body,
		Attempts:      r.Attempts,
		Reason:        r.Reason,
		FirstFailedAt: fromMillis(r.FirstFailedAt),
		DeadAt:        fromMillis(r.DeadAt),
	}
	_ = json.Unmarshal([]byte(r.MsgKeys), &dl.Keys)
	_ = json.Unmarshal([]byte(r.Properties), &dl.Properties)
	_ = json.Unmarshal([]byte(r.History), &dl.History)
	if r.RedrivenAt != nil {
		t := fromMillis(*r.RedrivenAt)
		dl.RedrivenAt = &t
	}
	return dl
}

// Bury implements dedup.Ledger: it stores the dead letter, marks the key
// dead and forgets its attempts, in one transaction.
func (s *Store) Bury(ctx context.Context, dl *dedup.DeadLetter) (int64, error) {
	if dl == nil {
		return 0, errors.New("sqldedup: nil dead letter")
	}
	if err := validGroupKey(dl.Group, dl.Key); err != nil {
		return 0, err
	}
	keys, _ := json.Marshal(nonNilStrings(dl.Keys))
	props, _ := json.Marshal(nonNilMap(dl.Properties))
	hist, _ := json.Marshal(nonNilHistory(dl.History))
	row := deadLetterRow{
		ConsumerGroup: dl.Group,
		DedupKey:      dl.Key,
		MessageID:     dl.MessageID,
		Topic:         dl.Topic,
		Tags:          dl.Tags,
		MsgKeys:       string(keys),
		Body:          dl.Body,
		Properties:    string(props),
		Attempts:      dl.Attempts,
		Reason:        dl.Reason,
		History:       string(hist),
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now, err := s.now(ctx, tx)
		if err != nil {
			return err
		}
		row.DeadAt = now
		row.FirstFailedAt = now
		if !dl.FirstFailedAt.IsZero() {
			row.FirstFailedAt = dl.FirstFailedAt.UnixMilli()
		}
		if err := tx.Table(s.prefix + "dead_letters").Create(&row).Error; err != nil {
			return err
		}
		if err := tx.Exec(s.sql.insertDead, dl.Group, dl.Key, dl.MessageID).Error; err != nil {
			return err
		}
		return tx.Exec("DELETE FROM "+s.prefix+"attempts WHERE consumer_group = ? AND dedup_key = ?", dl.Group, dl.Key).Error
	})
	if err != nil {
		return 0, fmt.Errorf("sqldedup: bury dead letter: %w", err)
	}
	dl.ID = row.ID
	dl.DeadAt = fromMillis(row.DeadAt)
	dl.FirstFailedAt = fromMillis(row.FirstFailedAt)
	return row.ID, nil
}

// DeadLetters implements dedup.Ledger.
func (s *Store) DeadLetters(ctx context.Context, f dedup.DeadLetterFilter) ([]dedup.DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := s.db.WithContext(ctx).Table(s.prefix+"dead_letters").Where("id > ?", f.AfterID)
	if f.Group != "" {
		q = q.Where("consumer_group = ?", f.Group)
	}
	if f.Topic != "" {
		q = q.Where("topic = ?", f.Topic)
	}
	if !f.IncludeRedriven {
		q = q.Where("redriven_at IS NULL")
	}
	var rows []deadLetterRow
	if err := q.Order("id").Limit(f.Limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqldedup: list dead letters: %w", err)
	}
	out := make([]dedup.DeadLetter, len(rows))
	for i := range rows {
		out[i] = rows[i].toDeadLetter()
	}
	return out, nil
}

// DeadLetter implements dedup.Ledger.
func (s *Store) DeadLetter(ctx context.Context, id int64) (*dedup.DeadLetter, error) {
	var rows []deadLetterRow
	if err := s.db.WithContext(ctx).Table(s.prefix+"dead_letters").Where("id = ?", id).Limit(1).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqldedup: read dead letter: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("sqldedup: dead letter %d: %w", id, dedup.ErrNotFound)
	}
	dl := rows[0].toDeadLetter()
	return &dl, nil
}

// Redrive implements dedup.Ledger. The dead letter is claimed as redriven
// first, so two concurrent redrives publish once; if publish fails the claim
// is undone and the dead letter can be redriven again.
func (s *Store) Redrive(ctx context.Context, id int64, publish dedup.Publisher) error {
	if publish == nil {
		return errors.New("sqldedup: nil publisher")
	}
	dl, err := s.DeadLetter(ctx, id)
	if err != nil {
		return err
	}
	t := s.prefix + "dead_letters"
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		r := tx.Exec("UPDATE "+t+" SET redriven_at = "+s.sql.now+" WHERE id = ? AND redriven_at IS NULL", id)
		if r.Error != nil {
			return r.Error
		}
		if r.RowsAffected == 0 {
			return dedup.ErrAlreadyRedriven
		}
		if err := tx.Exec(s.sql.clearDead, dl.Group, dl.Key).Error; err != nil {
			return err
		}
		return tx.Exec("DELETE FROM "+s.prefix+"attempts WHERE consumer_group = ? AND dedup_key = ?", dl.Group, dl.Key).Error
	})
	if err != nil {
		if errors.Is(err, dedup.ErrAlreadyRedriven) {
			return fmt.Errorf("sqldedup: dead letter %d: %w", id, err)
		}
		return fmt.Errorf("sqldedup: redrive %d: %w", id, err)
	}
	if perr := publish(ctx, dl.Message()); perr != nil {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if uerr := s.db.WithContext(uctx).Exec("UPDATE "+t+" SET redriven_at = NULL WHERE id = ?", id).Error; uerr != nil {
			return fmt.Errorf("sqldedup: redrive %d: publish: %w (and undoing the claim failed: %v)", id, perr, uerr)
		}
		return fmt.Errorf("sqldedup: redrive %d: publish: %w", id, perr)
	}
	return nil
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilHistory(h []dedup.AttemptError) []dedup.AttemptError {
	if h == nil {
		return []dedup.AttemptError{}
	}
	return h
}

// StaleAttempts lists keys whose last recorded failure is older than
// olderThan (by the database clock) and that were neither retried since,
// nor succeeded, nor dead-lettered: messages the broker stopped
// redelivering. It is the backstop for losses outside idemq. The pinned
// rocketmq-client-go no longer drops a message whose send-back fails (it
// sends it into %RETRY%<group> itself, where v2.1.2 lost it); what
// StaleAttempts still catches is a message that reached the broker's own
// %DLQ% (the client's MaxReconsumeTimes below the DeadLetter middleware's
// MaxAttempts, an orderly consumer giving up, no DeadLetter middleware),
// and a retry copy the broker lost or deleted (a crash with asynchronous
// flush, retention expiry, a group's offsets reset past it). Choose
// olderThan above the longest retry delay in use (RocketMQ's ladder tops
// out at 2 hours). At most limit records are returned, oldest first
// (limit <= 0 means 100).
func (s *Store) StaleAttempts(ctx context.Context, olderThan time.Duration, limit int) ([]dedup.Attempts, error) {
	if limit <= 0 {
		limit = 100
	}
	now, err := s.now(ctx, s.db)
	if err != nil {
		return nil, err
	}
	type row struct {
		ConsumerGroup string
		DedupKey      string
		Attempts      int
		LastError     string
		History       string
		FirstAt       int64
		LastAt        int64
	}
	var rows []row
	err = s.db.WithContext(ctx).Raw("SELECT consumer_group, dedup_key, attempts, last_error, history, first_at, last_at FROM "+
		s.prefix+"attempts WHERE last_at < ? ORDER BY last_at LIMIT ?", now-olderThan.Milliseconds(), limit).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("sqldedup: stale attempts: %w", err)
	}
	out := make([]dedup.Attempts, len(rows))
	for i, r := range rows {
		out[i] = dedup.Attempts{Group: r.ConsumerGroup, Key: r.DedupKey, Count: r.Attempts, LastError: r.LastError,
			FirstAt: fromMillis(r.FirstAt), LastAt: fromMillis(r.LastAt)}
		_ = json.Unmarshal([]byte(r.History), &out[i].History)
	}
	return out, nil
}
