package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// AttemptsConfig configures Attempts.
type AttemptsConfig struct {
	// Logger receives the failures of the best-effort ClearAttempts.
	// Defaults to slog.Default().
	Logger *slog.Logger
}

// Attempts returns a middleware that keeps a durable count of failed
// attempts per (msg.Group, dedup key) in ledger, outside the handler's
// database transaction (the ledger uses its own), so that the count and the
// error history survive the handler's rollback and a restart.
//
// When the handlers it wraps fail, Attempts calls ledger.RecordFailure and
// raises msg.Attempt to the recorded count, so that DeadLetter (outside it)
// sees attempts the transport forgot, for example across a re-send. It
// also hands the record to DeadLetter for the dead letter's error history.
// If recording fails, the delivery's error is joined with the recording
// error; it stays retryable (unless it was permanent already).
//
// These failures are not recorded:
//   - errors wrapping dedup.ErrBusy: another owner is working on the key;
//   - infrastructure failures (dedup.IsInfrastructure): the store was
//     unreachable, or a deadlock or serialization failure outlasted the
//     store's own retries; the handler did not fail, and the transport
//     retries the delivery without an attempt being counted (the RocketMQ
//     consumer retries it in place, pausing with a backoff);
//   - any error when Attempts' own context is done: the consumer is
//     shutting down, and the delivery did not fail on its own (a handler
//     that ran past a Timeout inside Attempts did, and is recorded);
//   - messages without a usable group or key, which can never succeed.
//
// A success after recorded failures (msg.Attempt > 1) clears the record,
// best effort: a failure to clear is logged, not returned. A first attempt
// that succeeds costs no ledger call at all.
//
// Attempts must sit inside DeadLetter and outside Dedup (see Standard).
func Attempts(ledger dedup.Ledger, opts AttemptsConfig) (idemq.Middleware, error) {
	if ledger == nil {
		return nil, ErrNilLedger
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			err := next.Handle(ctx, msg)
			if err == nil {
				if msg.Attempt > 1 && usableKey(msg) {
					if cerr := ledger.ClearAttempts(ctx, msg.Group, msg.DedupKey()); cerr != nil {
						opts.Logger.WarnContext(ctx, "clear attempts after success",
							slog.String("group", msg.Group),
							slog.String("key", msg.DedupKey()),
							slog.String("message_id", msg.ID),
							slog.Any("error", cerr))
					}
				}
				return nil
			}
			if errors.Is(err, dedup.ErrBusy) || dedup.IsInfrastructure(err) || ctx.Err() != nil || !usableKey(msg) {
				return err
			}
			rec, rerr := ledger.RecordFailure(ctx, msg.Group, msg.DedupKey(), msg.Attempt, err)
			if rerr != nil {
				return errors.Join(err, fmt.Errorf("middleware: record failed attempt %d of key %q: %w", msg.Attempt, msg.DedupKey(), rerr))
			}
			if rec.Count > msg.Attempt {
				msg.Attempt = rec.Count
			}
			deliveryFrom(ctx).setAttempts(rec)
			return err
		})
	}, nil
}

// usableKey reports whether msg names a group and key the ledger can
// record.
func usableKey(msg *idemq.Message) bool {
	return dedup.Request{Group: msg.Group, Key: msg.DedupKey()}.Validate() == nil
}
