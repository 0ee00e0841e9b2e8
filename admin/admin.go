package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/sqlclock"
	"github.com/idemq/idemq/internal/tableprefix"
	"github.com/idemq/idemq/producer/outbox"
)

// Sender publishes a message again, keeping its message ID (msg.ID and the
// idemq message ID property). It is all a redrive needs: no node lease, no
// ID generator. [ProducerSender] adapts a producer.
type Sender func(ctx context.Context, msg *idemq.Message) error

// Config configures an Admin.
type Config struct {
	// TablePrefix is the prefix of every idemq table the Admin reads and
	// writes. It must match ^[a-z][a-z0-9_]{0,30}$. Defaults to "idemq_".
	TablePrefix string
	// Sender publishes redriven dead letters. Without it (and without
	// Outbox) RedriveDead returns ErrNoSender (a dry run still works).
	// Defaults to nil.
	Sender Sender
	// Outbox, when set, makes redrives transactional: RedriveDead writes
	// each message into this outbox (same message ID) in the same database
	// transaction that marks the dead letter redriven and clears its key,
	// and the outbox's relays send it. A crash cannot then leave a dead
	// letter marked redriven whose message was never sent. It must use
	// the Admin's database. Takes precedence over Sender. Defaults to nil.
	Outbox *outbox.Outbox
	// DefaultActor names the operator of actions whose context carries no
	// actor (see WithActor). Defaults to "unknown".
	DefaultActor string
	// StaleAfter is how long after its last failure a recorded attempt
	// counts as stale (the broker stopped redelivering it), in overviews
	// and metrics. Choose it above the longest retry delay in use.
	// Defaults to 3 hours (RocketMQ's ladder tops out at 2 hours).
	StaleAfter time.Duration
	// Logger receives warnings. Defaults to slog.Default().
	Logger *slog.Logger
}

// Admin is the operator's API over one database and table prefix. It is
// safe for concurrent use.
type Admin struct {
	db      *gorm.DB
	dialect string
	prefix  string
	cfg     Config
	store   *sqldedup.Store
}

// Errors returned by the Admin.
var (
	// ErrNotFound is returned for a dead letter, outbox row or audit
	// record that does not exist.
	ErrNotFound = errors.New("admin: not found")
	// ErrEmptyFilter is returned by a bulk action whose filter selects
	// nothing: set a selector, or All.
	ErrEmptyFilter = errors.New("admin: the filter selects nothing; set a selector or All")
	// ErrNoSender is returned by RedriveDead without Config.Sender.
	ErrNoSender = errors.New("admin: no sender configured to publish redriven messages")
	// ErrNoTable is returned when a table the call needs does not exist
	// (run Migrate, or the component is not in use).
	ErrNoTable = errors.New("admin: table does not exist")
	// ErrUnsupportedDialect is returned by New for a database other than
	// SQLite, PostgreSQL or MySQL/MariaDB.
	ErrUnsupportedDialect = errors.New("admin: unsupported database dialect")
)

// New returns an Admin over db, a SQLite, PostgreSQL or MySQL/MariaDB
// connection (MySQL DSNs need parseTime=true). It does not create tables:
// call Migrate.
func New(db *gorm.DB, cfg Config) (*Admin, error) {
	if db == nil {
		return nil, errors.New("admin: nil database")
	}
	if cfg.TablePrefix == "" {
		cfg.TablePrefix = "idemq_"
	}
	if !tableprefix.Valid(cfg.TablePrefix) {
		return nil, fmt.Errorf("admin: invalid table prefix %q (want ^[a-z][a-z0-9_]{0,30}$)", cfg.TablePrefix)
	}
	if cfg.DefaultActor == "" {
		cfg.DefaultActor = "unknown"
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 3 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := db.Dialector.Name()
	switch d {
	case "sqlite", "postgres", "mysql":
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedDialect, d)
	}
	store, err := sqldedup.New(db, sqldedup.Config{TablePrefix: cfg.TablePrefix, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return &Admin{db: db, dialect: d, prefix: cfg.TablePrefix, cfg: cfg, store: store}, nil
}

// Dialect returns the database dialect: "sqlite", "postgres" or "mysql".
func (a *Admin) Dialect() string { return a.dialect }

// TablePrefix returns the table prefix.
func (a *Admin) TablePrefix() string { return a.prefix }

// HasSender reports whether redrives can publish (Config.Sender or
// Config.Outbox is set).
func (a *Admin) HasSender() bool { return a.cfg.Sender != nil || a.cfg.Outbox != nil }

func (a *Admin) table(name string) string { return a.prefix + name }

func (a *Admin) hasTable(ctx context.Context, name string) bool {
	return a.db.WithContext(ctx).Migrator().HasTable(a.table(name))
}

// nowMs is the database clock in Unix milliseconds, as an expression.
func (a *Admin) nowMs() string {
	switch a.dialect {
	case "postgres":
		return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
	case "mysql":
		return sqlclock.MySQLMillis // UTC, whatever the session's time zone
	default:
		return "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
	}
}

// Now returns the database clock.
func (a *Admin) Now(ctx context.Context) (time.Time, error) {
	var ms int64
	if err := a.db.WithContext(ctx).Raw("SELECT " + a.nowMs()).Scan(&ms).Error; err != nil {
		return time.Time{}, fmt.Errorf("admin: read database clock: %w", err)
	}
	return time.UnixMilli(ms).UTC(), nil
}

func fromMs(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func toMs(t time.Time) int64 { return t.UnixMilli() }

// Components are the components whose tables Migrate creates and
// upgrades: "dedup" (dedup, attempts, dead_letters), "outbox", "producer"
// (node_leases, tx_records) and "admin" (audit_log).
func Components() []string { return append([]string(nil), migrate.Components...) }

// MigrationStep is one numbered schema step of a component.
type MigrationStep struct {
	Component string `json:"component"`
	Version   int    `json:"version"`
	Name      string `json:"name"`
	// AppliedAt is when the step was applied, or nil if it is pending.
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	// Modified is set for an applied step whose SQL changed since.
	Modified bool `json:"modified,omitempty"`
	// Unknown is set for an applied step this program does not know (a
	// newer version migrated the database).
	Unknown bool `json:"unknown,omitempty"`
}

// Migrate brings the tables of components (every component when none is
// named) up to date with their numbered steps, under a lock, and returns
// the steps it applied (and records them in the audit log); with dryRun it
// returns the steps it would apply and changes nothing. Tables created before migrations were versioned
// are adopted. It is what each component's own Migrate runs.
func (a *Admin) Migrate(ctx context.Context, dryRun bool, components ...string) ([]MigrationStep, error) {
	steps, err := migrate.Run(ctx, a.db, a.prefix, migrate.Config{DryRun: dryRun}, components...)
	out := make([]MigrationStep, len(steps))
	for i, s := range steps {
		out[i] = MigrationStep{Component: s.Component, Version: s.Version, Name: s.Name}
	}
	if err != nil {
		return out, fmt.Errorf("admin: %w", err)
	}
	if !dryRun && len(out) > 0 && a.hasTable(ctx, "audit_log") {
		target := strings.Join(components, ",")
		if target == "" {
			target = "all"
		}
		if _, err := a.record(ctx, a.db, ActionMigrate, target, int64(len(out)), map[string]any{"applied": out}); err != nil {
			return out, err
		}
	}
	return out, nil
}

// MigrationStatus lists every step of components (all when none is named)
// with whether it is applied.
func (a *Admin) MigrationStatus(ctx context.Context, components ...string) ([]MigrationStep, error) {
	st, err := migrate.Status(ctx, a.db, a.prefix, components...)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	out := make([]MigrationStep, len(st))
	for i, s := range st {
		out[i] = MigrationStep{Component: s.Component, Version: s.Version, Name: s.Name, AppliedAt: s.Applied,
			Modified: s.Modified, Unknown: s.Unknown}
	}
	return out, nil
}

type actorKey struct{}

// WithActor returns a context that names the operator of the actions run
// with it, for the audit log (a user name, "alice@host", a console login).
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor WithActor put in ctx, or "".
func ActorFrom(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

func (a *Admin) actor(ctx context.Context) string {
	if s := ActorFrom(ctx); s != "" {
		return s
	}
	return a.cfg.DefaultActor
}
