package admin_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/internal/testenv"
)

// TestMySQLClockIgnoresSessionTimeZone: on a private MariaDB whose SYSTEM
// time zone is Europe/Berlin, with the session clock frozen (the timestamp
// session variable, from the DSN) in the hour that the end of daylight
// saving time repeats, the clock the operator's views and audit records
// use is the instant's Unix time, not an hour ahead (as
// UNIX_TIMESTAMP(NOW()) read it; lease views then showed live leases
// expired).
func TestMySQLClockIgnoresSessionTimeZone(t *testing.T) {
	srv := testenv.StartDSTMariaDB(t)
	const inRepeatedHour = testenv.InRepeatedHour
	db := srv.Open(t, "timestamp="+strconv.Itoa(inRepeatedHour))
	a, err := admin.New(db, admin.Config{TablePrefix: testenv.TablePrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	now, err := a.Now(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(inRepeatedHour, 0); !now.Equal(want) {
		t.Fatalf("database clock at %s reads %s (%s off)", want.UTC(), now.UTC(), now.Sub(want))
	}
}
