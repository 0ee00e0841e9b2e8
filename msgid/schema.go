package msgid

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/migrate"
)

// migrateTables applies the numbered steps of the "producer" component
// (the lease table <prefix>node_leases and the transaction producer's
// <prefix>tx_records; producer.Schema returns their SQL) that
// <prefix>schema_migrations does not list yet, under a lock.
func migrateTables(ctx context.Context, db *gorm.DB, prefix string) error {
	if _, err := migrate.Run(ctx, db, prefix, migrate.Config{}, "producer"); err != nil {
		return fmt.Errorf("msgid: migrate: %w", err)
	}
	return nil
}
