package outbox

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// claimLog records which relay holds each row, to catch a row claimed by
// two relays at once.
type claimLog struct {
	mu      sync.Mutex
	holder  map[string]string
	claims  int
	doubles []string
}

func (c *claimLog) hooks() relayHooks {
	return relayHooks{
		Claimed: func(relay string, ids []string) {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, id := range ids {
				if h, ok := c.holder[id]; ok {
					c.doubles = append(c.doubles, fmt.Sprintf("%s claimed by %s while %s held it", id, relay, h))
				}
				c.holder[id] = relay
				c.claims++
			}
		},
		Sent: func(_, id, _ string) {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.holder, id)
		},
	}
}

// runRelays runs n relays until the backlog is empty and returns them.
func runRelays(t *testing.T, b *bundle, n int, s Sender, cfg RelayConfig) []*Relay {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var relays []*Relay
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c := cfg
		c.ID = "relay-" + strconv.Itoa(i)
		r := newRelay(t, b.ob, s, c)
		relays = append(relays, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx)
		}()
	}
	waitFor(t, "the backlog to drain", func() bool { return b.stats(t).Pending == 0 })
	cancel()
	wg.Wait()
	return relays
}

func TestFourRelaysSendEachRowOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		rows := 10_000
		if d.Dialect == DialectSQLite && raceEnabled {
			rows = 1_000 // see raceEnabled
		}
		b := setup(t, d, Config{})
		ids := b.enqueueN(t, "orders", rows)
		s := &recSender{}
		log := &claimLog{holder: map[string]string{}}
		relays := runRelays(t, b, 4, s, RelayConfig{BatchSize: 50, PollInterval: 5 * time1ms, hooks: log.hooks()})

		got := s.delivered()
		for _, id := range ids {
			if got[id] != 1 {
				t.Fatalf("message %s sent %d times, want exactly once", id, got[id])
			}
		}
		if len(got) != rows || len(s.overlap) != 0 {
			t.Fatalf("distinct sends %d (want %d), concurrent sends of one ID: %v", len(got), rows, s.overlap)
		}
		if len(log.doubles) != 0 {
			t.Fatalf("rows claimed by two relays at once: %v", log.doubles[:min(5, len(log.doubles))])
		}
		var sent, lost int64
		busy := 0
		for _, r := range relays {
			st := r.Stats()
			sent += st.Sent
			lost += st.LostClaims
			if st.Sent > 0 {
				busy++
			}
		}
		if sent != int64(rows) || lost != 0 || log.claims != rows {
			t.Fatalf("relays marked %d sent, lost %d claims, claimed %d; want %d, 0, %d", sent, lost, log.claims, rows, rows)
		}
		if busy < 2 {
			t.Fatalf("only %d of 4 relays sent anything; the test did not exercise concurrency", busy)
		}
		if st := b.stats(t); st.Sent != int64(rows) {
			t.Fatalf("stats = %+v", st)
		}
	})
}

func TestOrderedModeKeepsPerKeyOrder(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		keys, perKey := 8, 60
		if d.Dialect == DialectSQLite && raceEnabled {
			keys, perKey = 4, 20 // see raceEnabled
		}
		b := setup(t, d, Config{Ordered: true})
		// Interleave keys, one transaction per round, plus unkeyed rows.
		for i := 0; i < perKey; i++ {
			var msgs []*idemq.Message
			for k := 0; k < keys; k++ {
				msgs = append(msgs, &idemq.Message{Topic: "orders", Body: []byte(strconv.Itoa(i)),
					Properties: map[string]string{PropertyShardingKey: "key-" + strconv.Itoa(k)}})
			}
			msgs = append(msgs, &idemq.Message{Topic: "orders", Body: []byte("free")})
			b.enqueue(t, msgs...)
		}
		var mu sync.Mutex
		next := map[string]int{}     // per key: the sequence number expected next
		inflight := map[string]int{} // per key: sends in progress
		var violations []string
		s := &recSender{fail: func(m *idemq.Message, call int) error {
			key := m.Properties[PropertyShardingKey]
			if key == "" {
				return nil
			}
			seq, _ := strconv.Atoi(string(m.Body))
			mu.Lock()
			inflight[key]++
			if inflight[key] > 1 {
				violations = append(violations, fmt.Sprintf("%s: two rows in flight", key))
			}
			if seq != next[key] {
				violations = append(violations, fmt.Sprintf("%s: sent #%d while #%d was next", key, seq, next[key]))
			}
			failed := call%7 == 0 // retryable failures hold the key back
			if !failed {
				next[key]++
			}
			inflight[key]--
			mu.Unlock()
			if failed {
				return errBroker
			}
			return nil
		}}
		runRelays(t, b, 4, s, fastRetry(RelayConfig{BatchSize: 16, MaxAttempts: 1000}))
		if len(violations) > 0 {
			t.Fatalf("order violations: %v", violations[:min(5, len(violations))])
		}
		for k := 0; k < keys; k++ {
			if n := next["key-"+strconv.Itoa(k)]; n != perKey {
				t.Fatalf("key-%d: %d rows sent, want %d", k, n, perKey)
			}
		}
		if st := b.stats(t); st.Sent != int64(keys*perKey+perKey) || st.Failed != 0 {
			t.Fatalf("stats = %+v", st)
		}
	})
}
