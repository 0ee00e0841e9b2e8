package dedup

import (
	"context"
	"errors"
	"time"

	"github.com/idemq/idemq"
)

// AttemptError is one failed attempt in a key's error history.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

// Attempts is the durable failure record of one (group, key).
type Attempts struct {
	Group string
	Key   string
	// Count is the number of failed attempts recorded so far.
	Count int
	// LastError is the most recent failure.
	LastError string
	// History holds the most recent failures, oldest first (bounded).
	History []AttemptError
	// FirstAt and LastAt bracket the recorded failures.
	FirstAt time.Time
	LastAt  time.Time
}

// DeadLetter is a message that will not be retried: it failed permanently
// or exhausted its attempts. It keeps the whole message.
type DeadLetter struct {
	ID        int64
	Group     string
	Key       string
	MessageID string
	Topic     string
	Tags      string
	Keys      []string
	// Body is the message's body, or only its first MaxDeadLetterBody
	// bytes when Truncated is set.
	Body       []byte
	Properties map[string]string
	// BodySize is the size in bytes of the message's whole body, and
	// BodySHA256 its SHA-256 (hex), whatever part of it Body holds. A
	// ledger fills them in when they are zero.
	BodySize   int64
	BodySHA256 string
	// Truncated is set when the letter does not hold the whole message:
	// its body was longer than MaxDeadLetterBody and was cut, or a field
	// could not be stored as it was (a NUL byte or invalid UTF-8 where the
	// database stores text, a value past its column's size) and was
	// altered. Reason says what was changed. Such a letter is kept for an
	// operator but cannot be redriven (ErrDeadLetterIncomplete).
	Truncated bool
	// Attempts is the number of attempts made.
	Attempts int
	// Reason is the final error.
	Reason string
	// History is the error history of the failed attempts.
	History []AttemptError
	// FirstFailedAt is when the first failure was recorded.
	FirstFailedAt time.Time
	// DeadAt is when the message was dead-lettered.
	DeadAt time.Time
	// RedrivenAt is set once the dead letter has been redriven.
	RedrivenAt *time.Time
}

// Message rebuilds the idemq message a dead letter holds, with its original
// message ID, ready to be published again.
func (d *DeadLetter) Message() *idemq.Message {
	props := make(map[string]string, len(d.Properties)+1)
	for k, v := range d.Properties {
		props[k] = v
	}
	if d.MessageID != "" {
		props[idemq.PropertyMessageID] = d.MessageID
	}
	return &idemq.Message{
		ID:         d.MessageID,
		Key:        d.Key,
		Group:      d.Group,
		Topic:      d.Topic,
		Tags:       d.Tags,
		Keys:       append([]string(nil), d.Keys...),
		Body:       append([]byte(nil), d.Body...),
		Properties: props,
	}
}

// DeadLetterFilter selects dead letters in a listing.
type DeadLetterFilter struct {
	// Group and Topic restrict the listing when non-empty.
	Group string
	Topic string
	// IncludeRedriven lists dead letters that were already redriven.
	IncludeRedriven bool
	// AfterID pages: only dead letters with a larger ID are listed.
	AfterID int64
	// Limit caps the listing. Defaults to 100.
	Limit int
}

// Publisher re-publishes a message, keeping its message ID.
type Publisher func(ctx context.Context, msg *idemq.Message) error

// Ledger records attempts and dead letters outside the handler's
// transaction, so that they survive the handler's rollback and a restart.
type Ledger interface {
	// RecordFailure adds a failed attempt of (group, key) with its error and
	// returns the updated record. attempt is the transport's attempt
	// number; the stored count becomes max(stored+1, attempt).
	RecordFailure(ctx context.Context, group, key string, attempt int, cause error) (Attempts, error)
	// ClearAttempts forgets the failures of (group, key).
	ClearAttempts(ctx context.Context, group, key string) error
	// Bury stores the dead letter and marks its key dead in one
	// transaction. Later deliveries of the key are duplicates until a
	// redrive.
	//
	// Bury is idempotent per message: if the key already has a dead
	// letter of the same message (the same message ID, or the same body)
	// that was not redriven, nothing is stored and that letter's ID is
	// returned, however many copies of one message fail at the same
	// moment. Different messages under one key (a key mapping bug) each
	// get their own letter, and the key's dead mark keeps the buried
	// body's fingerprint, so that another message under it is reported as
	// a mismatch rather than acknowledged as a duplicate. A field that cannot be stored whole is stored in part (see
	// DeadLetter.Truncated), so that every message can be buried.
	Bury(ctx context.Context, dl *DeadLetter) (int64, error)
	// DeadLetters lists dead letters, oldest first.
	DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error)
	// DeadLetter returns one dead letter by ID, or ErrNotFound.
	DeadLetter(ctx context.Context, id int64) (*DeadLetter, error)
	// Redrive clears the key's dead mark and attempts, publishes the
	// message again with its original message ID, and marks the dead
	// letter redriven, together with any other unredriven letter of the
	// same message under the same (group, key), so one message is
	// published once; letters of other messages under the key keep
	// waiting. If publish
	// fails the dead letters stay unredriven. A Truncated letter is
	// refused with ErrDeadLetterIncomplete.
	Redrive(ctx context.Context, id int64, publish Publisher) error
}

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("dedup: not found")

// ErrDeadLetterIncomplete is returned by Redrive for a dead letter that does
// not hold the whole message (DeadLetter.Truncated): publishing it would
// send a different message under the original ID.
var ErrDeadLetterIncomplete = errors.New("dedup: dead letter does not hold the whole message and cannot be redriven")

// MaxDeadLetterBody is the largest body a ledger stores whole in a dead
// letter (1 MiB). A longer body is cut to its first MaxDeadLetterBody bytes;
// its full size and SHA-256 are kept (DeadLetter.BodySize, BodySHA256).
const MaxDeadLetterBody = 1 << 20

// ErrAlreadyRedriven is returned by Redrive for a dead letter that was
// redriven before.
var ErrAlreadyRedriven = errors.New("dedup: dead letter already redriven")
