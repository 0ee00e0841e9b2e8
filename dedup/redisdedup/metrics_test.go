package redisdedup

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemq/idemq/dedup"
)

func TestFastPathMetrics(t *testing.T) {
	p := newProxy(t, redisAddr(t))
	b := setupFastPath(t, newClient(t, p.Addr()), FastPathConfig{RetryInterval: -1})
	reg := prometheus.NewRegistry()
	if err := b.fp.RegisterMetrics(reg, MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	req := dedup.Request{Group: "g", Key: "metrics"}
	mustProcess(t, b.fp, req, counter(&runs)) // miss, marker written
	mustProcess(t, b.fp, req, counter(&runs)) // hit
	p.Cut()
	mustProcess(t, b.fp, req, counter(&runs))                                         // fallback: the inner store says duplicate
	mustProcess(t, b.fp, dedup.Request{Group: "g", Key: "metrics-2"}, counter(&runs)) // fallback, no marker

	want := `
# HELP idemq_redis_fastpath_fallbacks_total Deliveries sent to the inner store because Redis failed, timed out or was left alone after a failure.
# TYPE idemq_redis_fastpath_fallbacks_total counter
idemq_redis_fastpath_fallbacks_total 2
# HELP idemq_redis_fastpath_hits_total Deliveries answered Duplicate from a Redis done marker.
# TYPE idemq_redis_fastpath_hits_total counter
idemq_redis_fastpath_hits_total 1
# HELP idemq_redis_fastpath_marker_write_errors_total Done markers that could not be written to Redis.
# TYPE idemq_redis_fastpath_marker_write_errors_total counter
idemq_redis_fastpath_marker_write_errors_total 0
# HELP idemq_redis_fastpath_marker_writes_total Done markers written to Redis.
# TYPE idemq_redis_fastpath_marker_writes_total counter
idemq_redis_fastpath_marker_writes_total 1
# HELP idemq_redis_fastpath_misses_total Deliveries Redis had no done marker for; the inner store decided them.
# TYPE idemq_redis_fastpath_misses_total counter
idemq_redis_fastpath_misses_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestFastPathMetricsRegistration(t *testing.T) {
	b := setupFastPath(t, newRedis(t), FastPathConfig{})
	reg := prometheus.NewRegistry()
	if err := b.fp.RegisterMetrics(reg, MetricsConfig{Namespace: "shop", ConstLabels: prometheus.Labels{"store": "a"}}); err != nil {
		t.Fatal(err)
	}
	// A second fast path needs its own labels.
	other := setupFastPath(t, newRedis(t), FastPathConfig{})
	if err := other.fp.RegisterMetrics(reg, MetricsConfig{Namespace: "shop", ConstLabels: prometheus.Labels{"store": "a"}}); err == nil {
		t.Fatal("registering a second fast path under the same names and labels succeeded")
	}
	if err := other.fp.RegisterMetrics(reg, MetricsConfig{Namespace: "shop", ConstLabels: prometheus.Labels{"store": "b"}}); err != nil {
		t.Fatalf("second fast path with its own labels: %v", err)
	}
	n, err := testutil.GatherAndCount(reg, "shop_redis_fastpath_hits_total")
	if err != nil || n != 2 {
		t.Fatalf("hits series = %d, %v; want 2", n, err)
	}
}
