// Package dedup decides, for a (consumer group, key) pair, whether a message
// is delivered for the first time or is a duplicate, and runs the handler
// only in the first case.
//
// A [Store] is chosen by the user; every store keeps these guarantees:
//
//   - Transactional mode (package dedup/sqldedup, the default for database
//     effects): the dedup row is inserted in the same database transaction
//     the handler receives through [Tx]. Commit makes both durable; any
//     failure rolls both back. The handler's database effects happen exactly
//     once. A concurrent second delivery blocks on the unique index until
//     the first commits (then it is a duplicate) or aborts (then it runs).
//   - Lease mode (sqldedup in lease mode, or redisdedup's lease store): the
//     key is claimed as PROCESSING with an owner token and a lease deadline,
//     renewed while the handler runs. A lease ends before it can expire:
//     both stores run the handler under a [LeaseKeeper], whose context ends
//     by the clock a safety margin before the lease could expire (counted
//     from when the claim or the last confirmed renewal was sent), and at
//     once when a renewal fails; renewal does not stop when the delivery
//     is cancelled. The context carries a fencing token ([Fence]) that
//     grows with every new owner, for external APIs that refuse stale
//     owners. Success marks the key DONE, failure releases it; both are
//     compare-and-set on the owner token, so a zombie never overwrites its
//     successor. An expired lease is taken over. Honest limit: an external
//     effect can repeat if a process dies after the effect and before
//     DONE; pass the message ID to the external API as its idempotency
//     key.
//   - A Redis fast path (package dedup/redisdedup) in front of either mode
//     acknowledges duplicates without touching the database. If Redis is
//     unreachable the store falls back to the database path; it never
//     processes without dedup.
//
// Dedup rows are scoped by consumer group: two groups never share them.
package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idemq/idemq"
)

// Outcome says what a Store did with a delivery.
type Outcome int

const (
	// Processed means the handler ran and succeeded, and the key is now
	// recorded as done.
	Processed Outcome = iota + 1
	// Duplicate means the key was already done (or dead-lettered); the
	// handler was not called and the delivery may be acknowledged.
	Duplicate
	// Busy means another owner holds a live lease on the key; the handler
	// was not called and the delivery must be retried later, not
	// acknowledged.
	Busy
)

// String returns the outcome's name.
func (o Outcome) String() string {
	switch o {
	case Processed:
		return "processed"
	case Duplicate:
		return "duplicate"
	case Busy:
		return "busy"
	}
	return "unknown"
}

// Request names the delivery a Store decides about.
type Request struct {
	// Group is the consumer group. Required.
	Group string
	// Key is the dedup key. Required; see idemq.ValidateKey.
	Key string
	// MessageID is the idemq message ID, kept with the row for operators.
	// Optional.
	MessageID string
	// Fingerprint identifies the payload (see [Fingerprint]). When set, a
	// duplicate whose stored fingerprint differs is reported through
	// Result.Mismatch. Optional.
	Fingerprint string
}

// Validate reports whether r names a valid group and key: a group of 1 to
// idemq.MaxKeyLen bytes of valid UTF-8 without NUL, and a key valid for
// idemq.ValidateKey.
func (r Request) Validate() error {
	if r.Group == "" {
		return ErrEmptyGroup
	}
	if len(r.Group) > idemq.MaxKeyLen {
		return ErrGroupTooLong
	}
	if strings.IndexByte(r.Group, 0) >= 0 || !utf8.ValidString(r.Group) {
		return ErrInvalidGroup
	}
	return idemq.ValidateKey(r.Key)
}

// Result describes what a Store did.
type Result struct {
	Outcome Outcome
	// RetryAfter is, for Busy, how long the current lease has left.
	RetryAfter time.Duration
	// Dead is set for a Duplicate whose key was dead-lettered.
	Dead bool
	// Mismatch is set for a Duplicate whose stored fingerprint differs from
	// the request's: a key collision or a key-mapping bug, not a plain
	// redelivery.
	Mismatch bool
	// FastPath is set when the decision was made by a Redis fast path
	// without touching the database.
	FastPath bool
}

// Func is the work a Store runs for a first delivery. In transactional mode
// ctx carries the database transaction (see [Tx]); in lease mode ctx ends
// before the lease could expire (see [LeaseKeeper]) and carries the fencing
// token (see [Fence]): check ctx.Err() right before an external effect.
type Func func(ctx context.Context) error

// Store runs a Func at most once per (group, key) as its mode defines.
//
// Process returns a nil error with Outcome Processed, Duplicate or Busy, or
// a non-nil error when fn failed (the error is fn's, unchanged, so that
// control-flow errors such as idemq.Permanent survive) or the store itself
// failed. After an error nothing is recorded as done and a redelivery may
// run fn again.
type Store interface {
	Process(ctx context.Context, req Request, fn Func) (Result, error)
}

// DeadMarker is implemented by stores that record dead-lettered keys, so
// that redeliveries of a dead key are duplicates and a redrive can clear it.
type DeadMarker interface {
	// MarkDead records the key as dead. A key already done stays done.
	MarkDead(ctx context.Context, group, key string) error
	// ClearDead removes a dead mark (and only a dead mark).
	ClearDead(ctx context.Context, group, key string) error
}

// DeadChecker is implemented by ledgers that record dead-lettered keys
// (sqldedup.Store), so that a store which keeps its own copy of the dead
// marks (redisdedup.LeaseStore) can ask whether a key is still dead: a
// redrive clears the ledger's mark.
type DeadChecker interface {
	// IsDead reports whether the key is dead-lettered and not redriven.
	IsDead(ctx context.Context, group, key string) (bool, error)
}

// Errors returned by stores.
var (
	// ErrEmptyGroup is returned for a request without a consumer group.
	ErrEmptyGroup = errors.New("dedup: empty consumer group")
	// ErrGroupTooLong is returned for a consumer group longer than
	// idemq.MaxKeyLen bytes.
	ErrGroupTooLong = errors.New("dedup: consumer group too long")
	// ErrInvalidGroup is returned for a consumer group that is not valid
	// UTF-8 or holds a NUL byte.
	ErrInvalidGroup = errors.New("dedup: consumer group is not valid UTF-8 or contains NUL")
	// ErrLeaseLost is returned when a lease-mode store could not renew or
	// complete its claim because another owner took it over. Nothing was
	// recorded as done.
	ErrLeaseLost = errors.New("dedup: lease lost")
	// ErrBusy is wrapped (in an idemq.RetryAfter) by middleware when a key
	// is held by another owner's live lease: the delivery must be retried
	// later, not acknowledged, and it is not a failed attempt.
	ErrBusy = errors.New("dedup: key is being processed by another owner")
	// ErrPayloadMismatch is reported for a duplicate whose payload
	// fingerprint differs from the one stored with the key.
	ErrPayloadMismatch = errors.New("dedup: duplicate key with a different payload")
	// ErrNilFunc is returned by Process when fn is nil.
	ErrNilFunc = errors.New("dedup: nil func")
	// ErrRetentionTooShort is returned by store constructors whose retention
	// does not outlast the retry horizon plus the redrive window.
	ErrRetentionTooShort = errors.New("dedup: retention shorter than retry horizon plus redrive window")
)

// Fingerprint returns a short, stable fingerprint of a payload: the first 16
// bytes of its SHA-256, hex-encoded (32 characters).
func Fingerprint(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:16])
}

// RocketMQRetryHorizon is the time RocketMQ spends redelivering a message
// with the default 16 retries (10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m
// 30m 1h 2h), rounded up.
const RocketMQRetryHorizon = 4*time.Hour + 47*time.Minute

// Retention describes how long dedup rows are kept and the horizon they must
// outlast.
type Retention struct {
	// Keep is how long a done key is remembered. Defaults to 7 days.
	Keep time.Duration
	// RetryHorizon is how long the broker keeps redelivering a message.
	// Defaults to RocketMQRetryHorizon, the broker's own default ladder.
	// A consumer that sends its own delays (the idemq consumer does, from
	// its RetryPolicy) redelivers for longer: set this to
	// middleware.RetryPolicy.Horizon of the policy in use, and let
	// middleware.Standard check it.
	RetryHorizon time.Duration
	// RedriveWindow is how long after the retry horizon an operator may
	// still redrive or re-send a message. Defaults to 24 hours.
	RedriveWindow time.Duration
}

// WithDefaults returns r with zero fields set to their defaults.
func (r Retention) WithDefaults() Retention {
	if r.Keep == 0 {
		r.Keep = 7 * 24 * time.Hour
	}
	if r.RetryHorizon == 0 {
		r.RetryHorizon = RocketMQRetryHorizon
	}
	if r.RedriveWindow == 0 {
		r.RedriveWindow = 24 * time.Hour
	}
	return r
}

// RetentionReporter is implemented by stores that forget done keys after a
// retention period, so that a chain builder (middleware.Standard) can check
// the retention against the retry policy actually in use.
type RetentionReporter interface {
	// Retention returns the store's retention, defaults applied.
	Retention() Retention
}

// Validate returns ErrRetentionTooShort if Keep does not outlast
// RetryHorizon plus RedriveWindow, and an error for negative durations.
func (r Retention) Validate() error {
	if r.Keep < 0 || r.RetryHorizon < 0 || r.RedriveWindow < 0 {
		return errors.New("dedup: negative retention duration")
	}
	if r.Keep < r.RetryHorizon+r.RedriveWindow {
		return ErrRetentionTooShort
	}
	return nil
}
