package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/testenv"
)

// The relay's counters are exported under linted names and follow what the
// relay did: one row sent, one failed permanently.
func TestRelayMetrics(t *testing.T) {
	b := setup(t, testenv.Databases()[0], Config{})
	b.enqueue(t, &idemq.Message{Topic: "t", Body: []byte("good")}, &idemq.Message{Topic: "t", Body: []byte("bad")})
	r := newRelay(t, b.ob, SenderFunc(func(_ context.Context, m *idemq.Message) (string, error) {
		if string(m.Body) == "bad" {
			return "", idemq.Permanent(errors.New("rejected"))
		}
		return "broker-1", nil
	}), RelayConfig{ID: "metrics"})
	reg := prometheus.NewPedanticRegistry()
	if err := r.RegisterMetrics(reg, MetricsConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP idemq_outbox_relay_sent_total Outbox rows the broker confirmed and the relay marked sent.
# TYPE idemq_outbox_relay_sent_total counter
idemq_outbox_relay_sent_total 1
# HELP idemq_outbox_relay_send_errors_total Failed sends of outbox rows, retryable or not.
# TYPE idemq_outbox_relay_send_errors_total counter
idemq_outbox_relay_send_errors_total 1
# HELP idemq_outbox_relay_failed_total Outbox rows moved to failed (permanent error or attempts exhausted), left for an operator.
# TYPE idemq_outbox_relay_failed_total counter
idemq_outbox_relay_failed_total 1
# HELP idemq_outbox_relay_claimed_total Outbox rows claimed by the relay.
# TYPE idemq_outbox_relay_claimed_total counter
idemq_outbox_relay_claimed_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "idemq_outbox_relay_sent_total",
		"idemq_outbox_relay_send_errors_total", "idemq_outbox_relay_failed_total", "idemq_outbox_relay_claimed_total"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	if err := r.RegisterMetrics(reg, MetricsConfig{}); err == nil {
		t.Fatal("registering a second relay under the same names succeeded")
	}
}
