package sqldedup

import (
	"context"
	"fmt"

	"github.com/idemq/idemq/dedup"
)

// Retention returns the store's retention, defaults applied. It implements
// dedup.RetentionReporter, so that middleware.Standard can check it against
// the retry policy in use.
func (s *Store) Retention() dedup.Retention { return s.cfg.Retention }

var _ dedup.RetentionReporter = (*Store)(nil)

type keyRow struct {
	ConsumerGroup string
	DedupKey      string
}

// Cleanup deletes done keys older than the retention period, walking the
// primary key (consumer group, key) in ranges of CleanupBatch keys so that
// no statement holds many locks. The cutoff comes from the database clock.
// Processing and dead rows are kept. It returns the number of rows deleted.
func (s *Store) Cleanup(ctx context.Context) (int64, error) {
	now, err := s.now(ctx, s.db)
	if err != nil {
		return 0, err
	}
	cutoff := now - s.cfg.Retention.Keep.Milliseconds()
	db := s.db.WithContext(ctx)
	var deleted int64
	var after keyRow // ("", "") sorts before every valid key
	for {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		var keys []keyRow
		if err := db.Raw(s.sql.cleanupWindow, after.ConsumerGroup, after.DedupKey, s.cfg.CleanupBatch).Scan(&keys).Error; err != nil {
			return deleted, fmt.Errorf("sqldedup: cleanup: %w", err)
		}
		if len(keys) == 0 {
			return deleted, nil
		}
		last := keys[len(keys)-1]
		r := db.Exec(s.sql.cleanupDelete, after.ConsumerGroup, after.DedupKey, last.ConsumerGroup, last.DedupKey, cutoff)
		if r.Error != nil {
			return deleted, fmt.Errorf("sqldedup: cleanup: %w", r.Error)
		}
		deleted += r.RowsAffected
		after = last
	}
}
