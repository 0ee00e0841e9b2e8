package sqldedup_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/testenv"
)

// Instants around the end of daylight saving time in Europe/Berlin on
// 2026-10-25, when local time goes from 03:00 CEST back to 02:00 CET at
// 01:00 UTC, so that local times 02:00 to 03:00 happen twice.
const (
	beforeRepeatedHour = 1792886395 // 2026-10-24 23:59:55 UTC, 01:59:55 CEST
	inRepeatedHour     = testenv.InRepeatedHour
	afterRepeatedHour  = 1792891800 // 2026-10-25 01:30:00 UTC, 02:30:00 CET (second time)
)

// TestMySQLClockIgnoresSessionTimeZone runs a private MariaDB whose SYSTEM
// time zone is Europe/Berlin, and freezes each session's clock (the
// timestamp session variable, set from the DSN) at instants around the
// hour that daylight saving time repeats. The store's database clock must
// be the Unix time of the instant whatever the zone, and a lease claimed
// ten seconds before a duplicate arrives must still be live for it: read
// as UNIX_TIMESTAMP(NOW()), the clock jumped an hour ahead at the start of
// the repeated hour, every live lease looked expired, and the duplicate
// took the key over while its owner's handler was still running.
func TestMySQLClockIgnoresSessionTimeZone(t *testing.T) {
	srv := testenv.StartDSTMariaDB(t)
	ctx := context.Background()
	prefix := testenv.TablePrefix(t)
	open := func(t *testing.T, unix int64) *sqldedup.Store {
		t.Helper()
		db := srv.Open(t, "timestamp="+strconv.FormatInt(unix, 10))
		s, err := sqldedup.New(db, sqldedup.Config{Mode: sqldedup.Lease, TablePrefix: prefix,
			LeaseDuration: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := open(t, beforeRepeatedHour).Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("Now", func(t *testing.T) {
		for _, unix := range []int64{beforeRepeatedHour, inRepeatedHour, afterRepeatedHour} {
			now, err := open(t, unix).Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := time.Unix(unix, 0); !now.Equal(want) {
				t.Errorf("database clock at %s reads %s (%s off)", want.UTC(), now.UTC(), now.Sub(want))
			}
		}
	})

	t.Run("LeaseHoldsAcrossRepeatedHour", func(t *testing.T) {
		holder, twin := open(t, beforeRepeatedHour), open(t, inRepeatedHour)
		req := dedup.Request{Group: "g", Key: "payout:1"}
		var twinRes dedup.Result
		var twinErr error
		twinRan := false
		res, err := holder.Process(ctx, req, func(ctx context.Context) error {
			// The holder's lease (30 s from 23:59:55 UTC) is live when the
			// twin arrives ten seconds later.
			twinRes, twinErr = twin.Process(ctx, req, func(context.Context) error {
				twinRan = true
				return nil
			})
			return nil
		})
		if twinErr != nil {
			t.Fatalf("twin: %v", twinErr)
		}
		if twinRan || twinRes.Outcome != dedup.Busy {
			t.Fatalf("twin ten seconds into a 30 s lease: %s, handler ran %v; want Busy, not run (two owners at once)",
				twinRes.Outcome, twinRan)
		}
		if err != nil || res.Outcome != dedup.Processed {
			t.Fatalf("holder: %s, %v; want Processed", res.Outcome, err)
		}
	})
}
