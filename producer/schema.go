package producer

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/tableprefix"
)

// DefaultTablePrefix is the table name prefix used when none is configured.
const DefaultTablePrefix = "idemq_"

// ValidateTablePrefix reports whether prefix may start a table name: a
// lower-case letter, then up to 30 lower-case letters, digits or
// underscores.
func ValidateTablePrefix(prefix string) error {
	if !tableprefix.Valid(prefix) {
		return fmt.Errorf("producer: invalid table prefix %q: want %s", prefix, tableprefix.Pattern)
	}
	return nil
}

// Schema returns the plain SQL that creates the producer's tables
// (<prefix>node_leases, for the node leases of package msgid, and
// <prefix>tx_records) for a dialect: "postgres",
// "mysql" (MySQL 8 and MariaDB) or "sqlite": every numbered step of the
// "producer" component in order (the files
// internal/migrate/steps/producer/NNNN_<name>.<dialect>.sql that the
// Migrate options apply). Use it to hand the DDL to a DBA.
func Schema(dialect, prefix string) (string, error) {
	if prefix == "" {
		prefix = DefaultTablePrefix
	}
	if err := ValidateTablePrefix(prefix); err != nil {
		return "", err
	}
	switch dialect {
	case "postgres", "mysql", "sqlite":
	default:
		return "", fmt.Errorf("producer: no schema for dialect %q (want postgres, mysql or sqlite)", dialect)
	}
	s, err := migrate.Schema("producer", dialect, prefix)
	if err != nil {
		return "", fmt.Errorf("producer: read schema: %w", err)
	}
	return s, nil
}

// migrateTables applies the numbered steps of the "producer" component
// that <prefix>schema_migrations does not list yet, under a lock. Tables
// created before migrations were versioned (by gorm's AutoMigrate or the
// plain SQL) are adopted by step 0001.
func migrateTables(ctx context.Context, db *gorm.DB, prefix string) error {
	if _, err := migrate.Run(ctx, db, prefix, migrate.Config{}, "producer"); err != nil {
		return fmt.Errorf("producer: migrate: %w", err)
	}
	return nil
}
