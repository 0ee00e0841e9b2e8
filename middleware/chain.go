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
// idemq.Chain:
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
