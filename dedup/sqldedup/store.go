package sqldedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/token"
)

// Mode selects how a Store runs a handler. It is [dedup.Mode]: one type
// for every store and for the conformance suite.
type Mode = dedup.Mode

const (
	// Transactional inserts the dedup row in the handler's own database
	// transaction. The default.
	Transactional = dedup.Transactional
	// Lease claims the key with an owner-fenced, renewed lease, for
	// handlers whose effects are outside the database.
	Lease = dedup.Lease
)

// Row statuses in the dedup table.
const (
	statusProcessing = 1
	statusDone       = 2
	statusDead       = 3
)

// Errors returned by the store.
var (
	// ErrBadPrefix is returned for a table prefix that is not
	// ^[a-z][a-z0-9_]{0,30}$.
	ErrBadPrefix = errors.New("sqldedup: invalid table prefix")
	// ErrUnsupportedDialect is returned for a gorm dialect other than
	// sqlite, postgres or mysql.
	ErrUnsupportedDialect = errors.New("sqldedup: unsupported database dialect")
	// ErrNilDB is returned by New for a nil *gorm.DB.
	ErrNilDB = errors.New("sqldedup: nil database")
	// ErrNotCommitted is returned by Process (transactional mode) when the
	// database answered COMMIT by rolling the transaction back (PostgreSQL
	// does so, without an error, for a transaction a failed statement
	// aborted). Nothing was stored; the delivery must be retried.
	ErrNotCommitted = errors.New("sqldedup: transaction rolled back at commit")
	// ErrStatementFailed is returned by Process (transactional mode) when a
	// statement in the handler's transaction failed and the handler
	// returned nil without rolling back to a savepoint set before the
	// statement. The store rolled the transaction back; the error wraps the
	// statement's own error. It is also what a statement issued after such
	// a failure returns to the handler: nothing reaches the database until
	// the handler rolls back to a savepoint.
	ErrStatementFailed = errors.New("sqldedup: a statement in the handler's transaction failed")
)

// Config configures a Store. The zero value is a transactional store with
// the default table prefix and retention.
type Config struct {
	// Mode is Transactional or Lease. Defaults to Transactional.
	Mode Mode
	// TablePrefix is prepended to the table names (dedup, attempts,
	// dead_letters). It must match ^[a-z][a-z0-9_]{0,30}$. Defaults to
	// "idemq_".
	TablePrefix string
	// Retention says how long done keys are kept; New rejects a Keep
	// shorter than RetryHorizon plus RedriveWindow. Defaults to
	// dedup.Retention{}.WithDefaults() (7 days).
	Retention dedup.Retention
	// LeaseDuration is the lease length in lease mode. Defaults to 30
	// seconds.
	LeaseDuration time.Duration
	// RenewInterval is how often a lease is renewed while the handler runs.
	// It must be shorter than the handler's deadline, LeaseDuration minus
	// its safety margin of LeaseDuration/5 (see dedup.LeaseKeeper). A
	// negative value disables renewal, for handlers that always finish well
	// within the lease: their context then ends at 4/5 of LeaseDuration.
	// Defaults to LeaseDuration/3.
	RenewInterval time.Duration
	// CleanupBatch is the number of rows Cleanup deletes per statement.
	// Defaults to 500.
	CleanupBatch int
	// HistoryLimit is the number of failures kept in an attempts record's
	// history. Defaults to 10.
	HistoryLimit int
	// TxOptions are the options of the transactional-mode transaction.
	// Defaults to the database's defaults.
	TxOptions *sql.TxOptions
	// CheckDoneFirst, in transactional mode, reads the key's row before
	// opening the transaction and answers a duplicate of a key committed
	// DONE or DEAD from that read alone (no BEGIN, insert or rollback).
	// It speeds up duplicates several-fold but adds that read (one round
	// trip) to every fresh message; set it where duplicates are common.
	CheckDoneFirst bool
	// disableFastBegin turns the one-round-trip begin off (tests compare
	// both paths).
	disableFastBegin bool
	// Logger receives the store's warnings (failed releases, renewals).
	// Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.TablePrefix == "" {
		c.TablePrefix = "idemq_"
	}
	c.Retention = c.Retention.WithDefaults()
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 30 * time.Second
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseDuration / 3
	}
	if c.CleanupBatch == 0 {
		c.CleanupBatch = 500
	}
	if c.HistoryLimit == 0 {
		c.HistoryLimit = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Mode != Transactional && c.Mode != Lease {
		return fmt.Errorf("sqldedup: unknown mode %d", int(c.Mode))
	}
	if err := ValidatePrefix(c.TablePrefix); err != nil {
		return err
	}
	if err := c.Retention.Validate(); err != nil {
		return fmt.Errorf("sqldedup: keep %s < retry horizon %s + redrive window %s: %w",
			c.Retention.Keep, c.Retention.RetryHorizon, c.Retention.RedriveWindow, err)
	}
	if c.LeaseDuration < 10*time.Millisecond {
		return fmt.Errorf("sqldedup: lease duration %s is shorter than 10ms", c.LeaseDuration)
	}
	if c.RenewInterval == 0 || c.RenewInterval >= c.LeaseDuration {
		return fmt.Errorf("sqldedup: renew interval %s must be shorter than the lease %s",
			c.RenewInterval, c.LeaseDuration)
	}
	if err := (dedup.LeaseKeeper{Lease: c.LeaseDuration, RenewEvery: c.RenewInterval, Renew: noRenew}).Validate(); err != nil {
		return fmt.Errorf("sqldedup: %w", err)
	}
	if c.CleanupBatch < 1 || c.CleanupBatch > 100000 {
		return fmt.Errorf("sqldedup: cleanup batch %d out of range 1..100000", c.CleanupBatch)
	}
	if c.HistoryLimit < 1 || c.HistoryLimit > 1000 {
		return fmt.Errorf("sqldedup: history limit %d out of range 1..1000", c.HistoryLimit)
	}
	return nil
}

// Store is the SQL dedup store. It implements dedup.Store, dedup.Ledger and
// dedup.DeadMarker. It is safe for concurrent use.
type Store struct {
	db      *gorm.DB
	cfg     Config
	dialect string
	prefix  string
	sql     queries
	// fastBegin is "postgres", "mysql" or "sqlite" when BEGIN and the dedup
	// insert can share a round trip or call (see fastbegin.go), else "".
	fastBegin string
	// conflictRetries counts transactional runs retried after a conflict.
	conflictRetries atomic.Int64
	// marks lets concurrent lease-mode DONE marks share a statement
	// (SQLite only).
	marks combiner[mark, error]
	// claims lets concurrent lease-mode claims share a statement (SQLite
	// only).
	claims combiner[claimQ, claimA]
	// claimStatements counts the statements lease-mode claims by insert
	// took.
	claimStatements atomic.Int64
	// markStatements counts the statements lease-mode marks took.
	markStatements atomic.Int64
	// failMarkBatch, set by tests, fails a shared mark statement.
	failMarkBatch func() error
	// failClaimBatch, set by tests, fails a shared claim statement.
	failClaimBatch func() error
}

var (
	_ dedup.Store       = (*Store)(nil)
	_ dedup.Ledger      = (*Store)(nil)
	_ dedup.DeadMarker  = (*Store)(nil)
	_ dedup.DeadChecker = (*Store)(nil)
)

// New returns a store on db. It does not create tables: call Migrate, or
// run the SQL from Schema.
func New(db *gorm.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, ErrNilDB
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dialect := db.Dialector.Name()
	switch dialect {
	case "sqlite", "postgres", "mysql":
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedDialect, dialect)
	}
	s := &Store{db: db, cfg: cfg, dialect: dialect, prefix: cfg.TablePrefix}
	s.sql = buildQueries(dialect, cfg.TablePrefix)
	if cfg.TxOptions == nil && !cfg.disableFastBegin {
		s.fastBegin = fastBeginKind(db, dialect)
		if s.fastBegin == "" && dialect == "mysql" && cfg.Mode == Transactional {
			cfg.Logger.Info("sqldedup: the MySQL DSN lacks multiStatements=true and interpolateParams=true: " +
				"BEGIN and the dedup insert take two round trips instead of one")
		}
	}
	return s, nil
}

// Mode returns the store's mode.
func (s *Store) Mode() Mode { return s.cfg.Mode }

// Dialect returns the database dialect: "sqlite", "postgres" or "mysql".
func (s *Store) Dialect() string { return s.dialect }

// DB returns the database the store uses.
func (s *Store) DB() *gorm.DB { return s.db }

// Table returns the full name of one of the store's tables: "dedup",
// "attempts" or "dead_letters".
func (s *Store) Table(name string) string { return s.prefix + name }

// Process implements dedup.Store in the store's mode.
func (s *Store) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	if fn == nil {
		return dedup.Result{}, dedup.ErrNilFunc
	}
	if err := req.Validate(); err != nil {
		return dedup.Result{}, err
	}
	// The message ID is kept beside the row for operators; one the
	// database cannot store (NUL, invalid UTF-8, too long) is cleaned, so
	// that it never keeps a message with a usable key from being processed.
	req.MessageID, _ = cleanText(req.MessageID, maxMessageIDLen)
	if s.cfg.Mode == Lease {
		// fn's own errors pass unchanged; the store's are classified.
		res, err := s.processLease(ctx, req, func(ctx context.Context) error {
			if err := fn(ctx); err != nil {
				return &handlerError{err}
			}
			return nil
		})
		var he *handlerError
		if errors.As(err, &he) {
			if err == error(he) {
				return res, he.err
			}
			return res, err
		}
		return res, storeError(ctx, err)
	}
	if !s.cfg.CheckDoneFirst {
		return s.processTx(ctx, req, fn)
	}
	if res, ok := s.doneAlready(ctx, req); ok {
		return res, nil // a duplicate of a finished key: no transaction
	}
	return s.processTx(ctx, req, fn)
}

// handlerError marks an error as the handler's own while it passes
// through the lease code, so that Process returns it unchanged and
// classifies only the store's errors.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// now returns the database clock in Unix milliseconds.
func (s *Store) now(ctx context.Context, db *gorm.DB) (int64, error) {
	var ms int64
	if err := db.WithContext(ctx).Raw("SELECT " + s.sql.now).Scan(&ms).Error; err != nil {
		return 0, fmt.Errorf("sqldedup: read database clock: %w", err)
	}
	return ms, nil
}

// Now returns the database clock.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	ms, err := s.now(ctx, s.db)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}

// noRenew stands in for the renewal when a configuration is validated.
func noRenew(context.Context) error { return nil }

func newOwnerToken() string {
	t, err := token.New()
	if err != nil {
		panic("sqldedup: " + err.Error())
	}
	return t
}
