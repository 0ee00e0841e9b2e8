package outbox

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemq/idemq/internal/promfunc"
)

// MetricsConfig names the metrics of [Relay.RegisterMetrics].
type MetricsConfig struct {
	// Namespace prefixes every metric name. Defaults to "idemq".
	Namespace string
	// Subsystem goes between the namespace and the name. Defaults to
	// "outbox_relay".
	Subsystem string
	// ConstLabels are added to every metric. Registering two relays with
	// one registry needs distinguishing labels (the relay ID, say).
	// Defaults to none.
	ConstLabels prometheus.Labels
}

// RegisterMetrics registers the relay's [RelayStats] with reg
// (prometheus.DefaultRegisterer if nil) as counters read at scrape time.
// Names below are for the default namespace and subsystem:
//
//	idemq_outbox_relay_claimed_total      rows claimed
//	idemq_outbox_relay_sent_total         rows the broker confirmed
//	idemq_outbox_relay_send_errors_total  failed sends (retryable or not)
//	idemq_outbox_relay_failed_total       rows moved to failed, left for an operator
//	idemq_outbox_relay_lost_claims_total  rows sent after another relay took the claim over
//	idemq_outbox_relay_released_total     claimed rows handed back unsent
//
// The backlog itself (pending rows, oldest pending age) is a property of
// the table, not of one relay: admin.Collector exports it.
func (r *Relay) RegisterMetrics(reg prometheus.Registerer, opts MetricsConfig) error {
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Subsystem == "" {
		opts.Subsystem = "outbox_relay"
	}
	return promfunc.Register(reg, "outbox", promfunc.Config{Namespace: opts.Namespace, Subsystem: opts.Subsystem, ConstLabels: opts.ConstLabels}, []promfunc.Counter{
		{Name: "claimed_total", Help: "Outbox rows claimed by the relay.", Value: func() float64 { return float64(r.Stats().Claimed) }},
		{Name: "sent_total", Help: "Outbox rows the broker confirmed and the relay marked sent.", Value: func() float64 { return float64(r.Stats().Sent) }},
		{Name: "send_errors_total", Help: "Failed sends of outbox rows, retryable or not.", Value: func() float64 { return float64(r.Stats().Failures) }},
		{Name: "failed_total", Help: "Outbox rows moved to failed (permanent error or attempts exhausted), left for an operator.", Value: func() float64 { return float64(r.Stats().Failed) }},
		{Name: "lost_claims_total", Help: "Outbox rows sent after another relay took the claim over.", Value: func() float64 { return float64(r.Stats().LostClaims) }},
		{Name: "released_total", Help: "Claimed outbox rows handed back unsent.", Value: func() float64 { return float64(r.Stats().Released) }},
	})
}
