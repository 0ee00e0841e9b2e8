package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
)

// StandardConfig configures Standard.
type StandardConfig struct {
	// Store decides first delivery or duplicate, and, when it implements
	// dedup.Ledger (sqldedup.Store does), records attempts and dead
	// letters too. Required.
	Store dedup.Store
	// Ledger records attempts and dead letters, for a Store that keeps no
	// ledger (redisdedup's lease store: give it a sqldedup.Store here).
	// Defaults to Store (for a redisdedup.FastPath, the store behind it);
	// Standard fails with ErrNilLedger if Store is not a
	// dedup.Ledger and Ledger is nil.
	Ledger dedup.Ledger
	// FastPath, if set, puts a Redis fast path (redisdedup.FastPath) in
	// front of Store: duplicates are answered from a done marker in Redis
	// without touching Store, which stays the authority (Redis down: every
	// delivery goes to Store). Its metrics are registered with Registerer.
	// Defaults to nil: no fast path.
	FastPath redis.UniversalClient
	// FastPathConfig configures the fast path when FastPath is set. Its TTL
	// defaults to the store's retention (dedup.RetentionReporter) and its
	// Logger to Logger. Background marker writes (MarkerQueue) need a Close
	// at shutdown that a chain cannot give: build the fast path with
	// NewFastPath, pass it as Store, and Close it yourself (a consumer does
	// that for its own fast path).
	FastPathConfig redisdedup.FastPathConfig
	// Dedup configures the Dedup middleware. Its Logger defaults to
	// Logger.
	Dedup DedupConfig
	// DeadLetter configures the DeadLetter middleware. Its Logger defaults
	// to Logger.
	DeadLetter DeadLetterConfig
	// RetryPolicy is the retry policy of the transport that runs the chain
	// (for a RocketMQ consumer, consumer.Config.RetryPolicy). Standard
	// checks that the store keeps dedup rows longer than the policy's
	// Horizon over DeadLetter.MaxAttempts plus the store's redrive window.
	// Defaults to RetryPolicy{}, the consumer's default.
	RetryPolicy RetryPolicy
	// Timeout bounds each handler run (see the Timeout middleware: the
	// error names it, and a handler still running at half of it is
	// reported). A negative value means no timeout beyond the transport's
	// own. Defaults to DefaultTimeout (30s).
	Timeout time.Duration
	// Logger receives the per-delivery lines and the middlewares' own
	// logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer, if set, enables the Metrics middleware and registers the
	// fast path's metrics. Defaults to nil: no metrics.
	Registerer prometheus.Registerer
	// Metrics configures the Metrics middleware when Registerer is set.
	Metrics MetricsConfig
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
//     transactional mode, inside the database transaction. With FastPath
//     set, its store is the Redis fast path in front of Store. A store
//     that keeps dead marks of its own apart from the ledger
//     (redisdedup.LeaseStore beside a sqldedup ledger) learns each burial
//     (DeadLetter marks the key dead in it too), and its dead answers are
//     checked against the ledger, which a redrive clears.
//  8. Timeout (DefaultTimeout unless told otherwise): inside Dedup, so the
//     deadline bounds the handler and its transaction but not the attempt
//     and dead-letter bookkeeping.
//  9. Recover again, innermost: a handler's panic becomes an error inside
//     the dedup transaction, which rolls back, and is recorded as a failed
//     attempt like any other error.
func Standard(cfg StandardConfig) ([]idemq.Middleware, error) {
	if cfg.Store == nil {
		return nil, ErrNilStore
	}
	if cfg.Ledger == nil {
		l, ok := authority(cfg.Store).(dedup.Ledger)
		if !ok {
			return nil, fmt.Errorf("%w: the store %T keeps no ledger of attempts and dead letters: set StandardConfig.Ledger (a sqldedup.Store, say)", ErrNilLedger, cfg.Store)
		}
		cfg.Ledger = l
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
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
	store := cfg.Store
	if cfg.FastPath != nil {
		if cfg.FastPathConfig.MarkerQueue > 0 {
			return nil, fmt.Errorf("%w: FastPathConfig.MarkerQueue needs a Close at shutdown that a chain cannot give: build the fast path with NewFastPath, pass it as Store and Close it yourself", ErrInvalidOption)
		}
		fp, err := NewFastPath(cfg)
		if err != nil {
			return nil, err
		}
		store = fp
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

	store, ledger := bridgeDeadMarks(store, cfg.Ledger, cfg.Logger)
	dl, err := DeadLetter(ledger, cfg.DeadLetter)
	if err != nil {
		return nil, err
	}
	att, err := Attempts(ledger, AttemptsConfig{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	dd, err := Dedup(store, cfg.Dedup)
	if err != nil {
		return nil, err
	}
	chain = append(chain, dl, att, dd)
	if cfg.Timeout > 0 {
		to, err := Timeout(cfg.Timeout, cfg.Logger)
		if err != nil {
			return nil, err
		}
		chain = append(chain, to)
	}
	return append(chain, Recover()), nil
}

// authority returns the store behind s where s is a fast path in front of
// one (redisdedup.FastPath), and s itself otherwise.
func authority(s dedup.Store) dedup.Store {
	if fp, ok := s.(interface{ Inner() dedup.Store }); ok {
		return fp.Inner()
	}
	return s
}

// NewFastPath builds the Redis fast path Standard builds for
// cfg.FastPath in front of cfg.Store: FastPathConfig's TTL defaults to the
// store's retention (dedup.RetentionReporter) and its Logger to
// cfg.Logger, and its metrics are registered with cfg.Registerer (metrics
// of another fast path already registered there under the same names are
// left as they are). Unlike Standard it accepts FastPathConfig.MarkerQueue:
// the caller owns the fast path, passes it to Standard as Store (Standard
// finds the ledger and the retention of the store behind it), and Closes
// it after the last delivery, which writes the markers still queued.
func NewFastPath(cfg StandardConfig) (*redisdedup.FastPath, error) {
	if cfg.Store == nil {
		return nil, ErrNilStore
	}
	if cfg.FastPath == nil {
		return nil, fmt.Errorf("%w: NewFastPath needs StandardConfig.FastPath (a Redis client)", ErrInvalidOption)
	}
	fc := cfg.FastPathConfig
	if fc.TTL == 0 {
		if r, ok := cfg.Store.(dedup.RetentionReporter); ok {
			fc.TTL = r.Retention().WithDefaults().Keep
		}
	}
	if fc.Logger == nil {
		fc.Logger = cfg.Logger
		if fc.Logger == nil {
			fc.Logger = slog.Default()
		}
	}
	fp, err := redisdedup.NewFastPath(cfg.Store, cfg.FastPath, fc)
	if err != nil {
		return nil, fmt.Errorf("middleware: fast path: %w", err)
	}
	if cfg.Registerer != nil {
		if err := fp.RegisterMetrics(cfg.Registerer, redisdedup.MetricsConfig{}); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				_ = fp.Close(context.Background())
				return nil, fmt.Errorf("middleware: fast path metrics: %w", err)
			}
		}
	}
	return fp, nil
}

// checkRetention returns an error wrapping dedup.ErrRetentionTooShort if the
// store (or the ledger) reports a retention whose Keep does not outlast the
// retry horizon of cfg's policy plus the retention's redrive window: a
// message still being retried could then be forgotten and processed again.
func checkRetention(cfg StandardConfig) error {
	r, ok := authority(cfg.Store).(dedup.RetentionReporter)
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
