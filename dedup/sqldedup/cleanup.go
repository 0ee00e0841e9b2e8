package sqldedup

import (
	"context"
	"database/sql"
	"fmt"
)

type window struct {
	MaxID      sql.NullInt64
	MinCreated sql.NullInt64
	N          int64
}

// Cleanup deletes done keys older than the retention period, walking the
// primary key in windows of CleanupBatch rows so that no statement holds
// many locks. The cutoff comes from the database clock. Processing and dead
// rows are kept. It returns the number of rows deleted.
func (s *Store) Cleanup(ctx context.Context) (int64, error) {
	now, err := s.now(ctx, s.db)
	if err != nil {
		return 0, err
	}
	cutoff := now - s.cfg.Retention.Keep.Milliseconds()
	db := s.db.WithContext(ctx)
	var deleted, after int64
	for {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		var w window
		if err := db.Raw(s.sql.cleanupWindow, after, s.cfg.CleanupBatch).Scan(&w).Error; err != nil {
			return deleted, fmt.Errorf("sqldedup: cleanup: %w", err)
		}
		if w.N == 0 || !w.MaxID.Valid {
			return deleted, nil
		}
		if w.MinCreated.Valid && w.MinCreated.Int64 >= cutoff {
			// Ids grow with insert time: nothing further is old enough.
			return deleted, nil
		}
		r := db.Exec(s.sql.cleanupDelete, after, w.MaxID.Int64, cutoff)
		if r.Error != nil {
			return deleted, fmt.Errorf("sqldedup: cleanup: %w", r.Error)
		}
		deleted += r.RowsAffected
		after = w.MaxID.Int64
	}
}
