package outbox

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// TestSlowBatchIsNotResentByALiveRelay: relay A claims a batch whose sends
// each take longer than the whole visibility window (a client that ignores
// the send timeout, as rocketmq-client-go does on route lookups), while
// relay B claims over and over. A keeps its claim alive while it sends, so
// B never gets a row of A's batch and every message is sent exactly once.
func TestSlowBatchIsNotResentByALiveRelay(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		const (
			rows       = 3
			visibility = 600 * time.Millisecond
			sendTime   = 700 * time.Millisecond // > visibility
		)
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", rows)
		s := &recSender{fail: func(*idemq.Message, int) error {
			time.Sleep(sendTime) // deaf to its context
			return nil
		}}
		cfg := RelayConfig{BatchSize: rows, Visibility: visibility, SendTimeout: 100 * time.Millisecond, PollInterval: 10 * time.Millisecond}

		claimedAt := make(chan time.Time, 1)
		acfg := cfg
		acfg.ID = "slow"
		acfg.hooks.Claimed = func(string, []string) { claimedAt <- time.Now() }
		a := newRelay(t, b.ob, s, acfg)

		var bClaims atomic.Int64
		bcfg := cfg
		bcfg.ID = "eager"
		bcfg.hooks.Claimed = func(_ string, got []string) { bClaims.Add(int64(len(got))) }
		other := newRelay(t, b.ob, s, bcfg)

		var wg sync.WaitGroup
		wg.Add(1)
		aDone := make(chan struct{})
		go func() {
			defer wg.Done()
			defer close(aDone)
			if n, err := a.RunOnce(context.Background()); err != nil || n != rows {
				t.Errorf("slow relay: claimed %d, %v; want %d", n, err, rows)
			}
		}()
		start := <-claimedAt
		// B tries to claim until A is done; count the tries made after
		// A's first deadline passed, when the claim would have been up
		// for grabs without A keeping it.
		late := 0
		for running := true; running; {
			select {
			case <-aDone:
				running = false
			default:
				if _, err := other.RunOnce(context.Background()); err != nil {
					t.Fatalf("eager relay: %v", err)
				}
				if time.Since(start) > visibility+50*time.Millisecond {
					late++
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		wg.Wait()
		if late == 0 {
			t.Fatal("the eager relay never tried to claim after the first deadline; the test proved nothing")
		}
		got := s.delivered()
		for _, id := range ids {
			if got[id] != 1 {
				t.Errorf("message %s sent %d times, want exactly once", id, got[id])
			}
		}
		if n := bClaims.Load(); n != 0 {
			t.Errorf("the eager relay claimed %d rows of the live relay's batch", n)
		}
		if st := a.Stats(); st.Sent != rows || st.LostClaims != 0 || st.Released != 0 {
			t.Errorf("slow relay stats = %+v, want %d sent and nothing lost or released", st, rows)
		}
		if st := b.stats(t); st.Sent != rows || st.Pending != 0 {
			t.Errorf("outbox stats = %+v", st)
		}
	})
}

// TestConfirmedRowsAreMarkedAsTheyCome: while a relay is still sending
// the rest of its batch, the rows the broker already confirmed are marked
// sent, so a relay that dies mid-batch leaves only its unconfirmed rows
// and the one in flight to be sent again.
func TestConfirmedRowsAreMarkedAsTheyCome(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", 3)
		release := make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(release) }) }
		t.Cleanup(unblock)
		s := &recSender{fail: func(msg *idemq.Message, call int) error {
			if call == 3 {
				<-release // the last row hangs until the test has looked
			}
			return nil
		}}
		r := newRelay(t, b.ob, s, RelayConfig{BatchSize: 3})
		done := make(chan error, 1)
		go func() {
			_, err := r.RunOnce(context.Background())
			done <- err
		}()
		// A generous limit: the marks need a round trip each, not time.
		testenv.Eventually(t, 20*time.Second, "the first two rows marked sent while the third is in flight", func() bool {
			return b.get(t, ids[0]).Status == StatusSent && b.get(t, ids[1]).Status == StatusSent
		})
		if e := b.get(t, ids[2]); e.Status != StatusPending {
			t.Fatalf("third row status %v while its send hangs, want pending", e.Status)
		}
		unblock()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if e := b.get(t, ids[2]); e.Status != StatusSent {
			t.Fatalf("third row status %v after its send, want sent", e.Status)
		}
	})
}

// TestRelayStopsBeforeAnUnextendedClaimExpires cuts the relay off from its
// database right after it claimed a batch, so that its claim can no longer
// be extended: the relay goes on sending only while a send cannot outlast
// the claim, counted from before the claiming statement was sent, and
// starts no send after that. (PostgreSQL and MariaDB: SQLite has no link
// to cut.)
func TestRelayStopsBeforeAnUnextendedClaimExpires(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		var dsnVia func(testing.TB, string) string
		var target string
		switch d.Dialect {
		case DialectPostgres:
			dsnVia, target = testenv.PostgresDSNVia, testenv.PostgresAddr(t)
		case DialectMySQL:
			dsnVia, target = testenv.MySQLDSNVia, testenv.MySQLAddr(t)
		default:
			t.Skip("SQLite has no network link to cut")
		}
		const (
			rows        = 20
			visibility  = 900 * time.Millisecond
			sendTimeout = 200 * time.Millisecond
			sendTime    = 100 * time.Millisecond
		)
		b := setup(t, d, Config{})
		b.enqueueN(t, "orders", rows)
		proxy := testenv.NewProxy(t, target)
		via := openVia(t, d.Dialect, dsnVia(t, proxy.Addr()))
		ob, err := New(via, Config{TablePrefix: b.prefix, IDSource: &seqIDs{}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu     sync.Mutex
			starts []time.Time
		)
		s := SenderFunc(func(ctx context.Context, msg *idemq.Message) (string, error) {
			mu.Lock()
			starts = append(starts, time.Now())
			if len(starts) == 1 {
				proxy.Cut()
			}
			mu.Unlock()
			select {
			case <-time.After(sendTime):
				return "ok", nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		})
		r := newRelay(t, ob, s, RelayConfig{BatchSize: rows, Visibility: visibility, SendTimeout: sendTimeout})
		before := time.Now() // no later than the claiming statement was sent
		if n, err := r.RunOnce(context.Background()); err != nil || n != rows {
			t.Fatalf("RunOnce: %d, %v; want %d claimed", n, err, rows)
		}
		proxy.Restore()
		mu.Lock()
		defer mu.Unlock()
		if len(starts) < 3 || len(starts) >= rows {
			t.Fatalf("%d sends, want the relay to send several rows and stop well before %d", len(starts), rows)
		}
		// The relay checks time.Until(deadline) > SendTimeout right before
		// each send; allow the few microseconds between that check and the
		// sender's clock reading, and between before and the statement.
		const slack = 5 * time.Millisecond
		limit := before.Add(visibility - sendTimeout + slack)
		for i, at := range starts {
			if at.After(limit) {
				t.Errorf("send %d started %s after the claim, later than Visibility-SendTimeout (%s)", i, at.Sub(before), visibility-sendTimeout)
			}
		}
	})
}

// openVia opens dsn with gorm for the dialect, closed when the test ends.
func openVia(t *testing.T, dialect, dsn string) *gorm.DB {
	t.Helper()
	var dl gorm.Dialector
	if dialect == DialectPostgres {
		dl = postgres.Open(dsn)
	} else {
		dl = mysql.Open(dsn)
	}
	db, err := gorm.Open(dl, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}
