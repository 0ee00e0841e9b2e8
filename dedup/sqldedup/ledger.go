package sqldedup

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// maxErrorLen bounds a stored error message, in bytes.
const maxErrorLen = 2048

// errText is the storable text of err: at most maxErrorLen bytes of valid
// UTF-8 without NUL (see cleanText).
func errText(err error) string {
	if err == nil {
		return ""
	}
	s, _ := cleanText(err.Error(), maxErrorLen)
	return s
}

// cleanText returns s as every database can store it in a text column of
// maxBytes bytes: invalid UTF-8 and NUL bytes (which PostgreSQL refuses in
// text) become U+FFFD, and a longer string is cut at a rune boundary and
// ends in "…". changed reports whether s was altered.
func cleanText(s string, maxBytes int) (out string, changed bool) {
	out = s
	if !utf8.ValidString(out) {
		out = strings.ToValidUTF8(out, "\uFFFD")
	}
	if strings.IndexByte(out, 0) >= 0 {
		out = strings.ReplaceAll(out, "\x00", "\uFFFD")
	}
	if len(out) > maxBytes {
		cut := maxBytes - len("…")
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out, out != s
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
	err := s.ledgerTx(ctx, func(tx *gorm.DB) error {
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
		return dedup.Attempts{}, fmt.Errorf("sqldedup: read attempts: %w", storeError(ctx, r.Error))
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
		return fmt.Errorf("sqldedup: clear attempts: %w", storeError(ctx, err))
	}
	return nil
}

// MarkDead implements dedup.DeadMarker. A key that is already done or
// claimed keeps its row.
func (s *Store) MarkDead(ctx context.Context, group, key string) error {
	if err := validGroupKey(group, key); err != nil {
		return err
	}
	if err := s.db.WithContext(ctx).Exec(s.sql.insertDead, group, key, "", "").Error; err != nil {
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

// IsDead implements dedup.DeadChecker: it reports whether the key holds a
// dead mark (Bury or MarkDead set it, and no redrive or ClearDead removed
// it). A failure to reach the database wraps dedup.ErrUnavailable.
func (s *Store) IsDead(ctx context.Context, group, key string) (bool, error) {
	if err := validGroupKey(group, key); err != nil {
		return false, err
	}
	var st []int
	if err := s.db.WithContext(ctx).Raw("SELECT status FROM "+s.prefix+"dedup WHERE consumer_group = ? AND dedup_key = ?", group, key).Scan(&st).Error; err != nil {
		return false, storeError(ctx, fmt.Errorf("sqldedup: read dead mark: %w", err))
	}
	return len(st) == 1 && st[0] == statusDead, nil
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
	BodySize      int64
	BodySha256    string `gorm:"column:body_sha256"`
	Truncated     int
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
		BodySize:      r.BodySize,
		BodySHA256:    r.BodySha256,
		Truncated:     r.Truncated != 0,
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

// Sizes of the dead letter's text columns, in bytes. VARCHAR(n) counts
// characters, which are never more than bytes; TEXT is MySQL's 64 KiB.
const (
	maxMessageIDLen = 191
	maxTopicLen     = 255
	maxTagsLen      = 255
	maxReasonLen    = 16 << 10
	maxKeysJSON     = 32 << 10
	maxPropsJSON    = 1 << 20
	maxHistoryError = maxErrorLen
)

// deadLetterRowFor builds the row that stores dl, altering what the
// database could not store as it is (see dedup.DeadLetter.Truncated); the
// reason says what was altered.
func deadLetterRowFor(dl *dedup.DeadLetter) deadLetterRow {
	var altered []string
	text := func(name, v string, n int) string {
		out, changed := cleanText(v, n)
		if changed {
			altered = append(altered, name)
		}
		return out
	}
	row := deadLetterRow{
		ConsumerGroup: dl.Group,
		DedupKey:      dl.Key,
		MessageID:     text("message ID", dl.MessageID, maxMessageIDLen),
		Topic:         text("topic", dl.Topic, maxTopicLen),
		Tags:          text("tags", dl.Tags, maxTagsLen),
		Attempts:      dl.Attempts,
		BodySize:      dl.BodySize,
		BodySha256:    dl.BodySHA256,
	}
	if row.BodySize == 0 && row.BodySha256 == "" {
		sum := sha256.Sum256(dl.Body)
		row.BodySize = int64(len(dl.Body))
		row.BodySha256 = hex.EncodeToString(sum[:])
	}
	row.Body = dl.Body
	var notes []string
	if len(row.Body) > dedup.MaxDeadLetterBody {
		row.Body = row.Body[:dedup.MaxDeadLetterBody]
		notes = append(notes, fmt.Sprintf("body cut to its first %d of %d bytes (sha256 %s)",
			dedup.MaxDeadLetterBody, row.BodySize, row.BodySha256))
	}

	keys := nonNilStrings(dl.Keys)
	if !storableStrings(keys...) {
		altered = append(altered, "keys")
	}
	kb, _ := json.Marshal(keys)
	for len(kb) > maxKeysJSON && len(keys) > 0 {
		keys = keys[:len(keys)/2]
		kb, _ = json.Marshal(keys)
		if !slices.Contains(altered, "keys") {
			altered = append(altered, "keys")
		}
	}
	row.MsgKeys = string(kb)

	props := nonNilMap(dl.Properties)
	for k, v := range props {
		if !storableStrings(k, v) {
			altered = append(altered, "properties")
			break
		}
	}
	pb, _ := json.Marshal(props)
	if len(pb) > maxPropsJSON {
		// Keep whole entries, in key order, while they fit.
		names := slices.Sorted(maps.Keys(props))
		kept := map[string]string{}
		size := 2
		for _, k := range names {
			e, _ := json.Marshal(map[string]string{k: props[k]})
			if size+len(e) > maxPropsJSON {
				break
			}
			kept[k] = props[k]
			size += len(e)
		}
		pb, _ = json.Marshal(kept)
		if !slices.Contains(altered, "properties") {
			altered = append(altered, "properties")
		}
	}
	row.Properties = string(pb)

	hist := make([]dedup.AttemptError, len(dl.History))
	for i, h := range dl.History {
		h.Error, _ = cleanText(h.Error, maxHistoryError)
		hist[i] = h
	}
	hb, _ := json.Marshal(hist)
	row.History = string(hb)

	if len(altered) > 0 {
		notes = append(notes, strings.Join(altered, ", ")+" altered to be stored (NUL bytes and invalid UTF-8 replaced by U+FFFD, or cut to the column's size)")
	}
	reason := dl.Reason
	if len(notes) > 0 {
		row.Truncated = 1
		reason += " [dead letter incomplete, cannot be redriven: " + strings.Join(notes, "; ") + "]"
	}
	row.Reason, _ = cleanText(reason, maxReasonLen)
	return row
}

// storableStrings reports whether every s survives JSON encoding unchanged
// (valid UTF-8; a NUL is escaped and comes back).
func storableStrings(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// Bury implements dedup.Ledger: it stores the dead letter, marks the key
// dead (with the fingerprint of the message's body, so that another
// message under the key is a mismatch) and forgets its attempts, in one
// transaction, unless the key already has a dead letter of the same
// message (the same message ID, or the same body) that was not redriven,
// whose ID it then returns. Different messages under one key (a key
// mapping bug) each get their own dead letter.
//
// Bury is idempotent per message under concurrency on every database,
// without relying on rows-affected: it first claims the key's row in the
// dedup table (inserting the dead mark, or keeping a done or processing
// row) and locks it, so Burys of one key run one after the other; only then
// does it look for a live dead letter. On MySQL the transaction is READ
// COMMITTED, so that look sees what the previous holder of the lock
// committed (a REPEATABLE READ snapshot could predate it) and no gap locks
// are taken; a MySQL server that writes a binary log must then use
// binlog_format ROW or MIXED (the defaults), not STATEMENT.
//
// Fields the database cannot store as they are (see
// dedup.DeadLetter.Truncated) are stored in part: the body is cut to
// dedup.MaxDeadLetterBody bytes with its full size and SHA-256, text
// columns are cleaned of NUL and invalid UTF-8 and cut to their size, and
// the reason says so. The group and key must be valid (dedup.Request).
func (s *Store) Bury(ctx context.Context, dl *dedup.DeadLetter) (int64, error) {
	if dl == nil {
		return 0, errors.New("sqldedup: nil dead letter")
	}
	if err := validGroupKey(dl.Group, dl.Key); err != nil {
		return 0, err
	}
	row := deadLetterRowFor(dl)
	markID, _ := cleanText(dl.MessageID, maxMessageIDLen)
	var existing int64
	err := s.ledgerTx(ctx, func(tx *gorm.DB) error {
		existing = 0
		if err := s.lockKey(tx, dl.Group, dl.Key, markID, dedup.Fingerprint(dl.Body)); err != nil {
			return err
		}
		// A waiting letter of the same message (see sameMessage), not
		// merely of the same key: different messages that a key mapping
		// bug gives one key each keep their own letter.
		var ids []int64
		if err := tx.Raw("SELECT id FROM "+s.prefix+"dead_letters WHERE consumer_group = ? AND dedup_key = ? AND redriven_at IS NULL AND "+sameMessage+" ORDER BY id LIMIT 1",
			dl.Group, dl.Key, row.MessageID, row.BodySha256).Scan(&ids).Error; err != nil {
			return err
		}
		if len(ids) > 0 {
			existing = ids[0]
		} else {
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
		}
		return tx.Exec("DELETE FROM "+s.prefix+"attempts WHERE consumer_group = ? AND dedup_key = ?", dl.Group, dl.Key).Error
	})
	if err != nil {
		return 0, fmt.Errorf("sqldedup: bury dead letter: %w", err)
	}
	if existing != 0 {
		dl.ID = existing
		return existing, nil
	}
	dl.ID = row.ID
	dl.DeadAt = fromMillis(row.DeadAt)
	dl.FirstFailedAt = fromMillis(row.FirstFailedAt)
	dl.BodySize, dl.BodySHA256, dl.Truncated = row.BodySize, row.BodySha256, row.Truncated != 0
	return row.ID, nil
}

// sameMessage is the condition, on a dead letter row, that it holds the
// message whose message ID and body SHA-256 are its two arguments: the same
// (non-empty) message ID, or the same body (a copy re-sent under another
// ID). Copies of one message share a dead letter and are redriven
// together; different messages under one key are not.
const sameMessage = "((message_id <> '' AND message_id = ?) OR (body_sha256 <> '' AND body_sha256 = ?))"

// lockKey makes sure (group, key) has a row in the dedup table (a dead
// mark, unless the key is already done or claimed) and locks it until tx
// ends.
func (s *Store) lockKey(tx *gorm.DB, group, key, messageID, fingerprint string) error {
	for try := 0; ; try++ {
		if err := tx.Exec(s.sql.insertDead, group, key, messageID, fingerprint).Error; err != nil {
			return err
		}
		var status []int
		if err := tx.Raw("SELECT status FROM "+s.prefix+"dedup WHERE consumer_group = ? AND dedup_key = ?"+s.forUpdate(),
			group, key).Scan(&status).Error; err != nil {
			return err
		}
		if len(status) > 0 {
			return nil
		}
		// Deleted between the insert and the lock (a redrive or cleanup
		// committed in between): insert again.
		if try == 2 {
			return fmt.Errorf("sqldedup: dedup row of key %q keeps disappearing", key)
		}
	}
}

// ledgerTx runs fn in one of the ledger's own transactions (see
// ledgerTxOptions). A run that loses a conflict (a deadlock, a
// serialization failure, a busy SQLite database) is run again in place,
// at most maxConflictRetries times with a jittered wait; a failure is
// wrapped as dedup.ErrConflict or dedup.ErrUnavailable when it is one, so
// that the middleware neither counts nor buries it.
func (s *Store) ledgerTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	for try := 0; ; try++ {
		err := s.db.WithContext(ctx).Transaction(fn, s.ledgerTxOptions())
		if err == nil || !isConflict(err) || try >= maxConflictRetries {
			return storeError(ctx, err)
		}
		if conflictBackoff(ctx, try) != nil {
			return storeError(ctx, err)
		}
	}
}

// ledgerTxOptions are the options of the ledger's own transactions: READ
// COMMITTED on MySQL (see Bury), the database's defaults elsewhere.
func (s *Store) ledgerTxOptions() *sql.TxOptions {
	if s.dialect == "mysql" {
		return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	return nil
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
// first, together with every other unredriven letter of its (group, key),
// under the key's lock (the one Bury takes), so two concurrent redrives,
// or redrives of two letters of one message, publish once; if publish
// fails the claim is undone (the key is marked dead again) and the dead
// letter can be redriven again. A
// truncated dead letter is refused with dedup.ErrDeadLetterIncomplete.
func (s *Store) Redrive(ctx context.Context, id int64, publish dedup.Publisher) error {
	if publish == nil {
		return errors.New("sqldedup: nil publisher")
	}
	dl, err := s.DeadLetter(ctx, id)
	if err != nil {
		return err
	}
	if dl.Truncated {
		return fmt.Errorf("sqldedup: dead letter %d: %w", id, dedup.ErrDeadLetterIncomplete)
	}
	t := s.prefix + "dead_letters"
	var claimed []int64
	err = s.ledgerTx(ctx, func(tx *gorm.DB) error {
		claimed = nil
		var status []int
		if err := tx.Raw("SELECT status FROM "+s.prefix+"dedup WHERE consumer_group = ? AND dedup_key = ?"+s.forUpdate(),
			dl.Group, dl.Key).Scan(&status).Error; err != nil {
			return err
		}
		r := tx.Exec("UPDATE "+t+" SET redriven_at = "+s.sql.now+" WHERE id = ? AND redriven_at IS NULL", id)
		if r.Error != nil {
			return r.Error
		}
		if r.RowsAffected == 0 {
			return dedup.ErrAlreadyRedriven
		}
		claimed = append(claimed, id)
		var twins []int64
		if err := tx.Raw("SELECT id FROM "+t+" WHERE consumer_group = ? AND dedup_key = ? AND redriven_at IS NULL AND id <> ? AND "+sameMessage,
			dl.Group, dl.Key, id, dl.MessageID, dl.BodySHA256).Scan(&twins).Error; err != nil {
			return err
		}
		if len(twins) > 0 {
			if err := tx.Exec("UPDATE "+t+" SET redriven_at = "+s.sql.now+" WHERE id IN ? AND redriven_at IS NULL", twins).Error; err != nil {
				return err
			}
			claimed = append(claimed, twins...)
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
		uerr := s.db.WithContext(uctx).Transaction(func(tx *gorm.DB) error {
			if err := tx.Exec(s.sql.insertDead, dl.Group, dl.Key, dl.MessageID, dedup.Fingerprint(dl.Body)).Error; err != nil {
				return err
			}
			return tx.Exec("UPDATE "+t+" SET redriven_at = NULL WHERE id IN ?", claimed).Error
		})
		if uerr != nil {
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
//
// A key that is done or dead in the dedup table is never listed, even if
// its attempts record was left behind (the record is cleared after a
// success best effort, and that can fail while the database is
// unreachable): such leftovers are deleted as they are found.
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
		Status        *int
	}
	a, d := s.prefix+"attempts", s.prefix+"dedup"
	var out []dedup.Attempts
	for len(out) < limit {
		var rows []row
		err = s.db.WithContext(ctx).Raw("SELECT a.consumer_group, a.dedup_key, a.attempts, a.last_error, a.history, a.first_at, a.last_at, d.status FROM "+
			a+" a LEFT JOIN "+d+" d ON d.consumer_group = a.consumer_group AND d.dedup_key = a.dedup_key"+
			" WHERE a.last_at < ? ORDER BY a.last_at, a.consumer_group, a.dedup_key LIMIT ?",
			now-olderThan.Milliseconds(), limit).Scan(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("sqldedup: stale attempts: %w", err)
		}
		leftovers := 0
		out = out[:0]
		for _, r := range rows {
			if r.Status != nil && (*r.Status == statusDone || *r.Status == statusDead) {
				// Only a record not touched since it was read is deleted.
				if err := s.db.WithContext(ctx).Exec("DELETE FROM "+a+" WHERE consumer_group = ? AND dedup_key = ? AND last_at = ?",
					r.ConsumerGroup, r.DedupKey, r.LastAt).Error; err != nil {
					return nil, fmt.Errorf("sqldedup: stale attempts: clear leftover: %w", err)
				}
				leftovers++
				continue
			}
			rec := dedup.Attempts{Group: r.ConsumerGroup, Key: r.DedupKey, Count: r.Attempts, LastError: r.LastError,
				FirstAt: fromMillis(r.FirstAt), LastAt: fromMillis(r.LastAt)}
			_ = json.Unmarshal([]byte(r.History), &rec.History)
			out = append(out, rec)
		}
		if leftovers == 0 || len(rows) < limit {
			break
		}
	}
	return out, nil
}
