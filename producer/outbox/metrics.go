package outbox

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricsOptions name the metrics of [Relay.RegisterMetrics].
type MetricsOptions struct {
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
func (r *Relay) RegisterMetrics(reg prometheus.Registerer, opts MetricsOptions) error {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if opts.Namespace == "" {
		opts.Namespace = "idemq"
	}
	if opts.Subsystem == "" {
		opts.Subsystem = "outbox_relay"
	}
	counters := []struct {
		name, help string
		value      func(RelayStats) int64
	}{
		{"claimed_total", "Outbox rows claimed by the relay.", func(s RelayStats) int64 { return s.Claimed }},
		{"sent_total", "Outbox rows the broker confirmed and the relay marked sent.", func(s RelayStats) int64 { return s.Sent }},
		{"send_errors_total", "Failed sends of outbox rows, retryable or not.", func(s RelayStats) int64 { return s.Failures }},
		{"failed_total", "Outbox rows moved to failed (permanent error or attempts exhausted), left for an operator.", func(s RelayStats) int64 { return s.Failed }},
		{"lost_claims_total", "Outbox rows sent after another relay took the claim over.", func(s RelayStats) int64 { return s.LostClaims }},
		{"released_total", "Claimed outbox rows handed back unsent.", func(s RelayStats) int64 { return s.Released }},
	}
	var errs []error
	for _, c := range counters {
		value := c.value
		err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: opts.Namespace, Subsystem: opts.Subsystem, Name: c.name, Help: c.help, ConstLabels: opts.ConstLabels,
		}, func() float64 { return float64(value(r.Stats())) }))
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox: register %s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}
