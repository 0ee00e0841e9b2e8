package consumer

import (
	"context"
	"testing"

	rmq "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/internal/testenv"
)

// A consumer's fast path writes its done markers in the background by
// default: a delivery is acknowledged while Redis hangs after the lookup,
// with its marker still queued, and Shutdown writes it, after which a
// redelivery is answered from Redis. With MarkerQueue -1 the marker write
// holds the delivery instead (and here fails on the hanging Redis).
func TestFastPathMarkersInBackgroundByDefault(t *testing.T) {
	for _, tc := range []struct {
		name        string
		markerQueue int
		background  bool
	}{
		{"default", 0, true},
		{"synchronous", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testenv.NewProxy(t, testenv.RedisAddr(t))
			rdb := testenv.NewRedisAt(t, p.Addr())
			kp := testenv.KeyPrefix(t)
			store := sqliteStore(t)
			c := newTestConsumer(t, func(context.Context, *idemq.Message) error {
				p.Stall() // the lookup is done; Redis hangs from now on
				return nil
			}, func(cfg *Config) {
				cfg.CustomChain = nil
				cfg.Store = store
				cfg.FastPath = rdb
				cfg.FastPathConfig = redisdedup.FastPathConfig{KeyPrefix: kp, MarkerQueue: tc.markerQueue}
			})
			msgs := []*primitive.MessageExt{extWithID("7200000000000000001", 0)}
			ctx, _ := concurrentCtx(msgs)
			if r, err := c.consume(ctx, msgs...); err != nil || r != rmq.ConsumeSuccess {
				t.Fatalf("consume = %v, %v; want success", r, err)
			}
			st := c.fastPath.Stats()
			if tc.background {
				if st.MarkerWrites != 0 || st.MarkerWriteErrors != 0 {
					t.Fatalf("marker stats %+v while Redis hangs; want the marker still queued", st)
				}
			} else if st.MarkerWriteErrors != 1 {
				t.Fatalf("marker stats %+v; want the synchronous write to have failed on the hanging Redis", st)
			}
			p.Resume()
			if err := c.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !tc.background {
				return
			}
			if st := c.fastPath.Stats(); st.MarkerWrites != 1 {
				t.Fatalf("marker stats after Shutdown %+v; want the queued marker written", st)
			}
			fresh, err := redisdedup.NewFastPath(store, testenv.NewRedis(t), redisdedup.FastPathConfig{KeyPrefix: kp})
			if err != nil {
				t.Fatal(err)
			}
			res, err := fresh.Process(context.Background(), dedup.Request{Group: "g1", Key: "7200000000000000001"}, func(context.Context) error {
				t.Error("the handler ran for a redelivery")
				return nil
			})
			if err != nil || res.Outcome != dedup.Duplicate || !res.FastPath {
				t.Fatalf("redelivery: %+v %v; want a duplicate answered from Redis", res, err)
			}
		})
	}
}
