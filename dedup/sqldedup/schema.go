package sqldedup

import (
	"context"
	"embed"
	"fmt"
	"regexp"
	"strings"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/sqlscript"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,30}$`)

// ValidatePrefix reports whether prefix can be used as a table prefix: a
// lowercase letter followed by at most 30 lowercase letters, digits or
// underscores.
func ValidatePrefix(prefix string) error {
	if !prefixPattern.MatchString(prefix) {
		return fmt.Errorf("%w: %q (want ^[a-z][a-z0-9_]{0,30}$)", ErrBadPrefix, prefix)
	}
	return nil
}

// Schema returns the plain SQL that creates the store's tables for dialect
// ("sqlite", "postgres" or "mysql") with the given table prefix. The
// statements are idempotent (CREATE ... IF NOT EXISTS).
func Schema(dialect, prefix string) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", err
	}
	switch dialect {
	case "sqlite", "postgres", "mysql":
	default:
		return "", fmt.Errorf("%w: %q", ErrUnsupportedDialect, dialect)
	}
	b, err := schemaFS.ReadFile("schema/" + dialect + ".sql")
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(string(b), "{{prefix}}", prefix), nil
}

// Migrate creates the store's tables if they do not exist, running the
// statements Schema returns, and upgrades tables created by an earlier
// schema (the dedup table's fence column; the dead letters' body_size,
// body_sha256 and truncated columns and their (consumer_group, dedup_key,
// id) index). It is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	return migrate(ctx, s.db, s.dialect, s.prefix)
}

func migrate(ctx context.Context, db *gorm.DB, dialect, prefix string) error {
	schema, err := Schema(dialect, prefix)
	if err != nil {
		return err
	}
	for _, stmt := range sqlscript.Split(schema) {
		if err := db.WithContext(ctx).Exec(stmt).Error; err != nil {
			return fmt.Errorf("sqldedup: migrate: %w", err)
		}
	}
	if err := addFenceColumn(ctx, db, dialect, prefix); err != nil {
		return err
	}
	return upgradeLedger(ctx, db, dialect, prefix)
}
