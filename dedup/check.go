package dedup

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// Checker is implemented by stores that can tell, before the first
// delivery, whether they are ready: a SQL store whose tables are missing
// or behind the code's schema, or a Redis store that cannot be reached,
// would otherwise fail every delivery. The consumer calls Check at Start
// and refuses to start when it fails.
type Checker interface {
	// Check returns nil if the store is ready, and otherwise an error that
	// says what is wrong and what to do (for a SQL store: the missing table
	// or migration step, and "run Migrate (or idemq migrate)"; for Redis:
	// the address and the cause).
	Check(ctx context.Context) error
}

// RetentionRunner is implemented by stores that delete their own rows once
// they are past retention (sqldedup.Store does, through its Janitor). The
// consumer starts it at Start and stops it at Shutdown, unless told that
// retention runs elsewhere.
type RetentionRunner interface {
	// StartRetention registers the retention work's metrics with reg (none
	// if reg is nil), then deletes rows past retention in the background
	// until ctx is done. It returns a channel closed once the background
	// work has stopped, or an error if it could not start (a metrics
	// registration that failed, say).
	StartRetention(ctx context.Context, reg prometheus.Registerer) (done <-chan struct{}, err error)
}
