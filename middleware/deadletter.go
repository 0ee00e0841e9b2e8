package middleware

import (
	"context"
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

// DeadLetterOptions configures DeadLetter.
type DeadLetterOptions struct {
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
// nor is anything while DeadLetter's own context is done (shutdown).
//
// DeadLetter must sit outside Attempts, which supplies the raised attempt
// count and the error history (see Standard). Without Attempts, the history
// holds the final error only.
func DeadLetter(ledger dedup.Ledger, opts DeadLetterOptions) (idemq.Middleware, error) {
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
			if err == nil || errors.Is(err, dedup.ErrBusy) || ctx.Err() != nil {
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
	dl := &dedup.DeadLetter{
		Group:         msg.Group,
		Key:           deadLetterKey(msg),
		MessageID:     msg.ID,
		Topic:         msg.Topic,
		Tags:          msg.Tags,
		Keys:          append([]string(nil), msg.Keys...),
		Body:          append([]byte(nil), msg.Body...),
		Properties:    maps.Clone(msg.Properties),
		Attempts:      max(msg.Attempt, 1),
		Reason:        err.Error(),
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

// deadLetterKey is the key a dead letter is stored and marked dead under:
// the message's dedup key, or, for a message whose key is unusable (its
// failure is then ErrNoDedupKey), its message ID, or failing that a
// fingerprint of its body, so that even such a message can be buried for an
// operator instead of being redelivered until the broker gives up on it.
func deadLetterKey(msg *idemq.Message) string {
	for _, k := range []string{msg.DedupKey(), msg.ID} {
		if idemq.ValidateKey(k) == nil {
			return k
		}
	}
	return "body-sha256:" + dedup.Fingerprint(msg.Body)
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
