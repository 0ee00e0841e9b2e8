package sqldedup

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/migrate"
)

// ErrSchemaNotReady is wrapped by Check when the store's tables are missing
// or behind the schema this version of the code expects.
var ErrSchemaNotReady = errors.New("sqldedup: schema not ready")

var (
	_ dedup.Checker         = (*Store)(nil)
	_ dedup.RetentionRunner = (*Store)(nil)
)

// Check reports whether the store's tables are in place and up to date, so
// that a consumer refuses to start (instead of failing every delivery with
// "table does not exist" and burning its attempts). It implements
// dedup.Checker:
//
//   - a table (dedup, attempts, dead_letters) that does not exist is named
//     in the error;
//   - a migration step of the "dedup" component that <prefix>schema_migrations
//     does not list, while it lists an earlier one, is named in the error
//     (the tables are behind the code).
//
// Both errors wrap ErrSchemaNotReady and say "run Migrate (or idemq
// migrate)". Tables built from the SQL of Schema, by migrations run
// outside idemq, record no step: they pass when all three tables exist.
// A failure to reach the database is returned as such.
func (s *Store) Check(ctx context.Context) error {
	states, err := migrate.Status(ctx, s.db, s.prefix, "dedup")
	if err != nil {
		return fmt.Errorf("sqldedup: check schema (prefix %q): %w", s.prefix, err)
	}
	var recorded bool
	var missing []string
	for _, st := range states {
		if st.Unknown {
			continue
		}
		if st.Applied != nil {
			recorded = true
		} else {
			missing = append(missing, fmt.Sprintf("%04d_%s", st.Version, st.Name))
		}
	}
	m := s.db.WithContext(ctx).Migrator()
	for _, t := range []string{"dedup", "attempts", "dead_letters"} {
		if !m.HasTable(s.prefix + t) {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("sqldedup: check schema (prefix %q): %w", s.prefix, err)
			}
			return fmt.Errorf("%w: table %s does not exist: run Migrate (or idemq migrate) for table prefix %q",
				ErrSchemaNotReady, s.prefix+t, s.prefix)
		}
	}
	if recorded && len(missing) > 0 {
		return fmt.Errorf("%w: the dedup tables (prefix %q) are behind this version: migration step %s not applied: run Migrate (or idemq migrate)",
			ErrSchemaNotReady, s.prefix, strings.Join(missing, ", "))
	}
	return nil
}

// StartRetention runs a Janitor with its defaults (a pass at once, then one
// a minute) in the background until ctx is done, after registering its
// metrics (Janitor.RegisterMetrics, default names) with reg if reg is not
// nil. Metrics that are already registered with reg, by another janitor of
// this process, are left as they are. It implements dedup.RetentionRunner:
// the consumer calls it at Start. A failed pass is logged by the janitor
// and retried at the next one.
func (s *Store) StartRetention(ctx context.Context, reg prometheus.Registerer) (<-chan struct{}, error) {
	j, err := NewJanitor(s, JanitorConfig{})
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := j.RegisterMetrics(reg, JanitorMetricsConfig{}); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("sqldedup: register janitor metrics: %w", err)
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = j.Run(ctx)
	}()
	return done, nil
}
