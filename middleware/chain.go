package middleware

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// StandardConfig configures Standard.
type StandardConfig struct {
	// Store decides first delivery or duplicate. Required.
	Store dedup.Store
	// Ledger records attempts and dead letters. Required.
	Ledger dedup.Ledger
	// Dedup configures the Dedup middleware. Its Logger defaults to
	// Logger.
	Dedup DedupOptions
	// DeadLetter configures the DeadLetter middleware. Its Logger defaults
	// to Logger.
	DeadLetter DeadLetterOptions
	// RetryPolicy is the retry policy of the transport that runs the chain
	// (for a RocketMQ consumer, consumer.Config.RetryPolicy). Standard
	// checks that the store keeps dedup rows longer than the policy's
	// Horizon over DeadLetter.MaxAttempts plus the store's redrive window.
	// Defaults to RetryPolicy{}, the consumer's default.
	RetryPolicy RetryPolicy
	// Timeout bounds each handler run when positive. Defaults to 0: no
	// timeout beyond the transport's own.
	Timeout time.Duration
	// Logger receives the per-delivery lines and the middlewares' own
	// logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer, if set, enables the Metrics middleware. Defaults to nil:
	// no metrics.
	Registerer prometheus.Registerer
	// Metrics configures the Metrics middleware when Registerer is set.
	Metrics MetricsOptions
	// TracerProvider, if set, enables the Tracing middleware. Defaults to
	// nil: no tracing.
	TracerProvider trace.TracerProvider
}

// Standard returns the recommended chain, outermost first, for
// idemq.Chain. It refuses (dedup.ErrRetentionTooShort) a store that reports
// its retention (dedup.RetentionReporter) and keeps dedup rows for less
// than RetryPolicy.Horizon(DeadLetter.MaxAttempts) plus its redrive
// window. The chain is:
//
//  1. Recover: nothing below, middleware included, can crash the process.
//  2. Tracing (if TracerProvider is set): the span covers the whole
//     delivery, dead-lettering included.
//  3. Metrics (if Registerer is set) and 4. Logging: outside DeadLetter and
//     Dedup, so they see the final outcome (processed, duplicate, busy,
//     dead letter, retry) through the delivery's context.
//  5. DeadLetter: outside Attempts, so it sees the attempt count Attempts
//     raised and the error history it recorded; it turns a permanent or
//     exhausted failure into an acknowledgement.
//  6. Attempts: outside Dedup, so that a failure is recorded in the
//     ledger's own transaction after the dedup transaction rolled back.
//  7. Dedup: runs everything inside it at most once per (group, key); in
//     transactional mode, inside the database transaction.
//  8. Timeout (if set): inside Dedup, so the deadline bounds the handler
//     and its transaction but not the attempt and dead-letter bookkeeping.
//  9. Recover again, innermost: a handler's panic becomes an error inside
//     the dedup transaction, which rolls back, and is recorded as a failed
//     attempt like any other error.
func Standard(cfg StandardConfig) ([]idemq.Middleware, error) {
	if cfg.Store == nil {
		return nil, ErrNilStore
	}
	if cfg.Ledger == nil {
		return nil, ErrNilLedger
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w (got %s)", ErrInvalidTimeout, cfg.Timeout)
	}
	if err := cfg.RetryPolicy.Validate(); err != nil {
		return nil, err
	}
	if err := checkRetention(cfg); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dedup.Logger == nil {
		cfg.Dedup.Logger = cfg.Logger
	}
	if cfg.DeadLetter.Logger == nil {
		cfg.DeadLetter.Logger = cfg.Logger
	}

	chain := []idemq.Middleware{Recover()}
	if cfg.TracerProvider != nil {
		chain = append(chain, Tracing(cfg.TracerProvider))
	}
	if cfg.Registerer != nil {
		m, err := Metrics(cfg.Registerer, cfg.Metrics)
		if err != nil {
			return nil, err
		}
		chain = append(chain, m)
	}
	chain = append(chain, Logging(cfg.Logger))

	dl, err := DeadLetter(cfg.Ledger, cfg.DeadLetter)
	if err != nil {
		return nil, err
	}
	att, err := Attempts(cfg.Ledger, AttemptsOptions{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	dd, err := Dedup(cfg.Store, cfg.Dedup)
	if err != nil {
		return nil, err
	}
	chain = append(chain, dl, att, dd)
	if cfg.Timeout > 0 {
		to, err := Timeout(cfg.Timeout)
		if err != nil {
			return nil, err
		}
		chain = append(chain, to)
	}
	return append(chain, Recover()), nil
}

// checkRetention returns an error wrapping dedup.ErrRetentionTooShort if the
// store (or the ledger) reports a retention whose Keep does not outlast the
// retry horizon of cfg's policy plus the retention's redrive window: a
// message still being retried could then be forgotten and processed again.
func checkRetention(cfg StandardConfig) error {
	r, ok := cfg.Store.(dedup.RetentionReporter)
	if !ok {
		if r, ok = cfg.Ledger.(dedup.RetentionReporter); !ok {
			return nil
		}
	}
	ret := r.Retention().WithDefaults()
	maxAttempts := cfg.DeadLetter.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	horizon := cfg.RetryPolicy.Horizon(maxAttempts)
	if ret.Keep < horizon+ret.RedriveWindow {
		return fmt.Errorf("%w: the store keeps dedup rows %s, but the retry policy redelivers a failing message for up to %s over %d attempts, plus a redrive window of %s: keep them at least %s",
			dedup.ErrRetentionTooShort, ret.Keep, horizon, maxAttempts, ret.RedriveWindow, horizon+ret.RedriveWindow)
	}
	return nil
}
