package middleware

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/idemq/idemq"
)

// Logging returns a middleware that writes one line per delivery to logger:
// at Debug level for a delivery that was processed or was a duplicate, Info
// for a busy key (a normal redelivery in lease mode), and Warn for a
// failure or a dead letter. Each line carries the group, topic, message ID,
// dedup key, attempt, duration and outcome (see the Outcome constants), and
// for a failure the error; for a recovered panic, also the stack.
//
// Put Logging outside DeadLetter and Dedup so that it sees their outcome
// (see Standard). A nil logger means slog.Default().
func Logging(logger *slog.Logger) idemq.Middleware {
	if logger == nil {
		logger = slog.Default()
	}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			ctx, d := ensureDelivery(ctx)
			start := time.Now()
			err := next.Handle(ctx, msg)
			elapsed := time.Since(start)

			out := outcome(d, err)
			level := slog.LevelDebug
			switch out {
			case OutcomeBusy:
				level = slog.LevelInfo
			case OutcomeDeadLetter, OutcomePermanent, OutcomeRetry:
				level = slog.LevelWarn
			}
			if !logger.Enabled(ctx, level) {
				return err
			}
			attrs := []slog.Attr{
				slog.String("group", msg.Group),
				slog.String("topic", msg.Topic),
				slog.String("message_id", msg.ID),
				slog.String("key", msg.DedupKey()),
				slog.Int("attempt", msg.Attempt),
				slog.Duration("duration", elapsed),
				slog.String("outcome", out),
			}
			if _, _, dead, id := d.snapshot(); dead {
				attrs = append(attrs, slog.Int64("dead_letter_id", id))
			}
			if err != nil {
				attrs = append(attrs, slog.Any("error", err))
				var p *PanicError
				if errors.As(err, &p) {
					attrs = append(attrs, slog.String("stack", string(p.Stack)))
				}
			}
			logger.LogAttrs(ctx, level, "message delivery", attrs...)
			return err
		})
	}
}
