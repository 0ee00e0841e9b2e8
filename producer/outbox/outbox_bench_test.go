package outbox

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// benchSender stands in for a broker: each send takes about latency (a
// broker round trip), like a synchronous RocketMQ send on a LAN.
type benchSender struct {
	latency time.Duration
	n       atomic.Int64
}

func (s *benchSender) Send(ctx context.Context, msg *idemq.Message) (string, error) {
	if s.latency > 0 {
		time.Sleep(s.latency)
	}
	s.n.Add(1)
	return msg.ID, nil
}

const benchLatency = 200 * time.Microsecond

// BenchmarkRelay measures relay throughput, in rows/s from committed row to
// confirmed and marked sent, with 1 and 4 relays, next to the raw rate of
// the same Sender called in a loop (raw: no database at all) and from 4
// goroutines (raw4). The ratio relay/raw is the cost of the outbox.
func BenchmarkRelay(b *testing.B) {
	for _, d := range testenv.Databases() {
		b.Run(d.Name, func(b *testing.B) {
			b.Run("raw", func(b *testing.B) { benchRaw(b, 1) })
			b.Run("raw4", func(b *testing.B) { benchRaw(b, 4) })
			b.Run("relays=1", func(b *testing.B) { benchRelays(b, d, 1) })
			b.Run("relays=4", func(b *testing.B) { benchRelays(b, d, 4) })
		})
	}
}

func benchRaw(b *testing.B, workers int) {
	s := &benchSender{latency: benchLatency}
	msg := &idemq.Message{ID: "1", Topic: "bench", Body: make([]byte, 256)}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := s.Send(context.Background(), msg); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
}

func benchRelays(b *testing.B, d testenv.DB, relays int) {
	db := d.Open(b)
	prefix := testenv.TablePrefix(b)
	ob, err := New(db, Config{IDSource: &seqIDs{}, TablePrefix: prefix, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	testenv.DropTables(b, db, ob.Table(), ob.Table()[:len(ob.Table())-len("outbox")]+"schema_migrations")
	bu := &bundle{db: db, ob: ob, dialect: d.Dialect, prefix: prefix}
	var msgs []*idemq.Message
	for i := 0; i < b.N; i++ {
		msgs = append(msgs, &idemq.Message{Topic: "bench", Body: make([]byte, 256)})
	}
	for i := 0; i < len(msgs); i += 500 {
		bu.enqueue(b, msgs[i:min(len(msgs), i+500)]...)
	}
	s := &benchSender{latency: benchLatency}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < relays; i++ {
		r, err := NewRelay(ob, s, RelayConfig{BatchSize: 100, PollInterval: time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); r.run(ctx) }()
	}
	for s.n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	// Wait for the last marks, then stop.
	for {
		st, err := ob.Stats(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if st.Pending == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
}
