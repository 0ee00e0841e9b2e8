package msgid

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/idemq/idemq/internal/testenv"
)

// TestSQLNodeLeaseClockIgnoresSessionTimeZone runs a private MariaDB whose
// SYSTEM time zone is Europe/Berlin, with each process's session clock
// frozen (the timestamp session variable, set from the DSN) around the hour
// that the end of daylight saving time repeats (2026-10-25, 02:00 to 03:00
// local). A node leased ten seconds before another process asks must not
// be handed to it: read as UNIX_TIMESTAMP(NOW()), the database clock
// jumped an hour ahead at the start of the repeated hour, the live lease
// looked expired, and two live processes generated IDs on one node.
func TestSQLNodeLeaseClockIgnoresSessionTimeZone(t *testing.T) {
	srv := testenv.StartDSTMariaDB(t)
	ctx := context.Background()
	prefix := tablePrefix(t, srv.Open(t, ""))
	lease := func(unix int64) (*NodeLease, error) {
		db := srv.Open(t, "timestamp="+strconv.FormatInt(unix, 10))
		return started(ctx)(NewSQLNodeLease(db, NodeLeaseConfig{TablePrefix: prefix, Migrate: true,
			TTL: 30 * time.Second, MinNode: 7, NodeCount: 1, Logger: quietLog}))
	}
	holder, err := lease(1792886395) // 2026-10-24 23:59:55 UTC, 01:59:55 CEST
	if err != nil {
		t.Fatalf("holder: %v", err)
	}
	closeLease(t, holder)
	other, err := lease(testenv.InRepeatedHour)
	if err == nil {
		closeLease(t, other)
		t.Fatalf("node %d leased to a second process ten seconds into the holder's 30 s lease", other.NodeID())
	}
	if !errors.Is(err, ErrNoFreeNode) {
		t.Fatalf("second process: %v, want ErrNoFreeNode", err)
	}
}
