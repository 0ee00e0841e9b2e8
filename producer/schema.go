package producer

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// Schema returns the plain SQL that creates the producer's tables
// (<prefix>node_leases and <prefix>tx_records) for a dialect: "postgres",
// "mysql" (MySQL 8 and MariaDB) or "sqlite". The files ship in
// producer/schema with the prefix "idemq_". Use it when gorm's AutoMigrate
// (the Migrate options) is not wanted, e.g. to hand the DDL to a DBA.
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
	b, err := schemaFS.ReadFile("schema/" + dialect + ".sql")
	if err != nil {
		return "", fmt.Errorf("producer: read schema: %w", err)
	}
	return strings.ReplaceAll(string(b), DefaultTablePrefix, prefix), nil
}
