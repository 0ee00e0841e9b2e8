package promfunc

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterReadsAtScrapeAndReportsConflicts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	n := 1.0
	counters := []Counter{{Name: "things_total", Help: "Things.", Value: func() float64 { return n }}}
	opts := Config{Namespace: "idemq", Subsystem: "test", ConstLabels: prometheus.Labels{"id": "a"}}
	if err := Register(reg, "owner", opts, counters); err != nil {
		t.Fatal(err)
	}
	n = 7
	want := "# HELP idemq_test_things_total Things.\n# TYPE idemq_test_things_total counter\nidemq_test_things_total{id=\"a\"} 7\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	err := Register(reg, "owner", opts, counters)
	if err == nil || !strings.Contains(err.Error(), "owner: register things_total") {
		t.Fatalf("second registration: %v, want a named conflict", err)
	}
}
