package sqldedup

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// deadLetterColumns are the dead_letters columns added after the first
// release, with their definition per dialect. Migrate adds those a table
// created before them lacks.
var deadLetterColumns = []struct {
	name string
	def  map[string]string
}{
	{"body_size", map[string]string{
		"postgres": "BIGINT NOT NULL DEFAULT 0",
		"mysql":    "BIGINT NOT NULL DEFAULT 0",
		"sqlite":   "INTEGER NOT NULL DEFAULT 0",
	}},
	{"body_sha256", map[string]string{
		"postgres": "VARCHAR(64) NOT NULL DEFAULT ''",
		"mysql":    "VARCHAR(64) NOT NULL DEFAULT ''",
		"sqlite":   "TEXT NOT NULL DEFAULT ''",
	}},
	{"truncated", map[string]string{
		"postgres": "SMALLINT NOT NULL DEFAULT 0",
		"mysql":    "SMALLINT NOT NULL DEFAULT 0",
		"sqlite":   "INTEGER NOT NULL DEFAULT 0",
	}},
}

// upgradeLedger brings a dead_letters table created by an earlier schema up
// to the current one: the body size, hash and truncated columns, and, on
// MySQL, the (consumer_group, dedup_key, id) index (PostgreSQL and SQLite
// get it from the schema's CREATE INDEX IF NOT EXISTS). It is idempotent,
// and safe against a concurrent Migrate: a failed ALTER whose column or
// index exists afterwards is not an error.
func upgradeLedger(ctx context.Context, db *gorm.DB, dialect, prefix string) error {
	db = db.WithContext(ctx)
	table := prefix + "dead_letters"
	m := db.Migrator()
	for _, c := range deadLetterColumns {
		if m.HasColumn(table, c.name) {
			continue
		}
		err := db.Exec("ALTER TABLE " + table + " ADD COLUMN " + c.name + " " + c.def[dialect]).Error
		if err != nil && !m.HasColumn(table, c.name) {
			return fmt.Errorf("sqldedup: migrate: add %s.%s: %w", table, c.name, err)
		}
	}
	if dialect == "mysql" {
		index := prefix + "dead_letters_key"
		if !m.HasIndex(table, index) {
			err := db.Exec("ALTER TABLE " + table + " ADD KEY " + index + " (consumer_group, dedup_key, id)").Error
			if err != nil && !m.HasIndex(table, index) {
				return fmt.Errorf("sqldedup: migrate: add index %s: %w", index, err)
			}
		}
	}
	return nil
}
