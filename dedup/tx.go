package dedup

import (
	"context"

	"gorm.io/gorm"
)

type txKey struct{}

// WithTx returns a context that carries tx. Stores in transactional mode
// call it; handlers read the transaction with [Tx].
func WithTx(ctx context.Context, tx *gorm.DB) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// Tx returns the database transaction the dedup row was inserted in, bound
// to ctx, or nil outside a transactional-mode handler. Everything the
// handler writes through it commits or rolls back together with the dedup
// row.
func Tx(ctx context.Context) *gorm.DB {
	tx, _ := ctx.Value(txKey{}).(*gorm.DB)
	if tx == nil {
		return nil
	}
	return tx.WithContext(ctx)
}
