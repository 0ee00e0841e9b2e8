package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// DefaultMaxAttempts is the attempt at which DeadLetter buries a message
// that keeps failing. It matches RocketMQ's default of 16 redeliveries, so
// the message reaches our dead letters before the broker's own %DLQ% queue.
const DefaultMaxAttempts = 16

// ErrDeadLetterFailed is wrapped by the error DeadLetter returns when it
// could not store a dead letter. That error is retryable, never permanent:
// the transport redelivers the message and nothing is lost.
var ErrDeadLetterFailed = errors.New("middleware: dead letter not stored")

// DeadLetterConfig configures DeadLetter.
type DeadLetterConfig struct {
	// MaxAttempts is the attempt (msg.Attempt, as raised by Attempts) at
	// which a message that still fails is dead-lettered instead of
	// retried. Defaults to DefaultMaxAttempts.
	MaxAttempts int
	// Logger receives a Warn line for every dead letter and an Error line
	// for every dead letter that could not be stored. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// DeadLetter returns a middleware that buries messages which will not
// succeed: those whose handlers return an error marked idemq.Permanent, and
// those that fail at attempt MaxAttempts or later. It writes a
// dedup.DeadLetter holding the whole message (group, key, message ID,
// topic, tags, keys, body, properties), the attempts, the final error and
// the error history, through ledger.Bury, which also marks the key dead so
// that later deliveries of it are duplicates until an operator redrives it.
// Then it acknowledges the delivery (returns nil).
//
// If Bury fails, DeadLetter returns a retryable error wrapping
// ErrDeadLetterFailed (and not the permanent cause), so the transport
// redelivers the message. Errors wrapping dedup.ErrBusy are never buried,
// nor infrastructure failures (dedup.IsInfrastructure: the store was
// unreachable or gave up on a conflict, which says nothing about the
// message), nor anything while DeadLetter's own context is done
// (shutdown).
//
// One message is buried once: the ledger's Bury is idempotent per message
// (its group and key, and its message ID or body), so copies failing
// together, and redeliveries of a message whose burial was answered too
// late, share one dead letter, while different messages under one key
// each get their own. A message whose
// group or dedup key cannot be stored is buried under a name derived from
// a SHA-256 of its contents (see the reason of its dead letter), so it too
// is buried once.
//
// DeadLetter must sit outside Attempts, which supplies the raised attempt
// count and the error history (see Standard). Without Attempts, the history
// holds the final error only.
func DeadLetter(ledger dedup.Ledger, opts DeadLetterConfig) (idemq.Middleware, error) {
	if ledger == nil {
		return nil, ErrNilLedger
	}
	if opts.MaxAttempts < 0 {
		return nil, fmt.Errorf("%w: negative MaxAttempts %d", ErrInvalidOption, opts.MaxAttempts)
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			ctx, d := ensureDelivery(ctx)
			err := next.Handle(ctx, msg)
			if err == nil || errors.Is(err, dedup.ErrBusy) || dedup.IsInfrastructure(err) || ctx.Err() != nil {
				return err
			}
			permanent := idemq.IsPermanent(err)
			if !permanent && msg.Attempt < opts.MaxAttempts {
				return err
			}
			_, rec, _, _ := d.snapshot()
			dl := newDeadLetter(msg, rec, err, time.Now())
			id, berr := ledger.Bury(ctx, dl)
			if berr != nil {
				opts.Logger.ErrorContext(ctx, "dead letter not stored; the message will be redelivered",
					deadLetterAttrs(msg, dl, berr)...)
				return fmt.Errorf("%w: %w (handler error: %v)", ErrDeadLetterFailed, berr, err)
			}
			d.setDeadLetter(id)
			opts.Logger.WarnContext(ctx, "message dead-lettered",
				append(deadLetterAttrs(msg, dl, err), slog.Int64("dead_letter_id", id), slog.Bool("permanent", permanent))...)
			return nil
		})
	}, nil
}

// newDeadLetter builds the dead letter for msg, which failed with err after
// the attempts in rec (nil when Attempts is not in the chain or could not
// record).
func newDeadLetter(msg *idemq.Message, rec *dedup.Attempts, err error, now time.Time) *dedup.DeadLetter {
	group, key, note := burialKey(msg)
	dl := &dedup.DeadLetter{
		Group:         group,
		Key:           key,
		MessageID:     msg.ID,
		Topic:         msg.Topic,
		Tags:          msg.Tags,
		Keys:          append([]string(nil), msg.Keys...),
		Body:          append([]byte(nil), msg.Body...),
		Properties:    maps.Clone(msg.Properties),
		Attempts:      max(msg.Attempt, 1),
		Reason:        note + err.Error(),
		FirstFailedAt: now,
		DeadAt:        now,
	}
	if rec != nil {
		dl.Attempts = max(dl.Attempts, rec.Count)
		dl.History = append([]dedup.AttemptError(nil), rec.History...)
		if !rec.FirstAt.IsZero() {
			dl.FirstFailedAt = rec.FirstAt
		}
	}
	if len(dl.History) == 0 {
		dl.History = []dedup.AttemptError{{Attempt: dl.Attempts, At: now, Error: dl.Reason}}
	}
	return dl
}

// Prefixes of the names a message is buried under when its own group or
// key cannot be stored.
const (
	unusableKeyPrefix   = "unusable-key:sha256:"
	unusableGroupPrefix = "unusable-group:sha256:"
)

// burialKey returns the (group, key) msg is buried and marked dead under,
// and a note for the reason when they are not the message's own.
//
// A message whose group and dedup key are usable is buried under them. One
// whose key is not (empty key and ID, too long, NUL, invalid UTF-8: Dedup
// fails it with ErrNoDedupKey) is buried under
// "unusable-key:sha256:<hex>", a SHA-256 of what the message holds (its raw
// key, message ID, topic and body), so every copy and redelivery of it
// finds the same dead letter instead of adding one; an unusable group is
// replaced likewise by "unusable-group:sha256:<hex>" of the raw group.
func burialKey(msg *idemq.Message) (group, key, note string) {
	group, key = msg.Group, msg.DedupKey()
	verr := dedup.Request{Group: group, Key: key}.Validate()
	if verr == nil {
		return group, key, ""
	}
	if (dedup.Request{Group: group, Key: "k"}).Validate() != nil {
		sum := sha256.Sum256([]byte(group))
		group = unusableGroupPrefix + hex.EncodeToString(sum[:16])
	}
	h := sha256.New()
	for _, part := range []string{key, msg.ID, msg.Topic} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write([]byte(part))
	}
	h.Write(msg.Body)
	key = unusableKeyPrefix + hex.EncodeToString(h.Sum(nil))
	note = fmt.Sprintf("unusable group or dedup key (%v); buried under group %q key %q, derived from a SHA-256 of the message's raw group, key, message ID, topic and body so that its copies share this dead letter: ",
		verr, group, key)
	return group, key, note
}

func deadLetterAttrs(msg *idemq.Message, dl *dedup.DeadLetter, err error) []any {
	return []any{
		slog.String("group", dl.Group),
		slog.String("key", dl.Key),
		slog.String("message_id", dl.MessageID),
		slog.String("topic", msg.Topic),
		slog.Int("attempts", dl.Attempts),
		slog.Any("error", err),
	}
}
