package sqldedup

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/tableprefix"
)

// ValidatePrefix reports whether prefix can be used as a table prefix: a
// lowercase letter followed by at most 30 lowercase letters, digits or
// underscores.
func ValidatePrefix(prefix string) error {
	if !tableprefix.Valid(prefix) {
		return fmt.Errorf("%w: %q (want ^[a-z][a-z0-9_]{0,30}$)", ErrBadPrefix, prefix)
	}
	return nil
}

// Schema returns the plain SQL that creates the store's tables for dialect
// ("sqlite", "postgres" or "mysql") with the given table prefix: every
// numbered step of the "dedup" component in order (the files
// internal/migrate/steps/dedup/NNNN_<name>.<dialect>.sql), for users who
// run their own migrations. Run on an empty database, it builds the schema
// Migrate builds.
func Schema(dialect, prefix string) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", err
	}
	switch dialect {
	case "sqlite", "postgres", "mysql":
	default:
		return "", fmt.Errorf("%w: %q", ErrUnsupportedDialect, dialect)
	}
	return migrate.Schema("dedup", dialect, prefix)
}

// Migrate brings the store's tables up to date: it applies the numbered
// steps of the "dedup" component that <prefix>schema_migrations does not
// list yet, under a lock, so that processes starting together migrate
// once. Tables created before migrations were versioned are adopted (step
// 0001 is the first shipped schema, written CREATE ... IF NOT EXISTS).
func (s *Store) Migrate(ctx context.Context) error {
	return migrateDB(ctx, s.db, s.prefix)
}

func migrateDB(ctx context.Context, db *gorm.DB, prefix string) error {
	if _, err := migrate.Run(ctx, db, prefix, migrate.Config{}, "dedup"); err != nil {
		return fmt.Errorf("sqldedup: migrate: %w", err)
	}
	return nil
}
