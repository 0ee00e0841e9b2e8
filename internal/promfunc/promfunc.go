// Package promfunc registers counters that Prometheus reads from a stats
// snapshot at scrape time: one way for every idemq component that keeps its
// own Stats (the Redis fast path, the outbox relay) to export them.
package promfunc

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter is one counter, read by Value at every scrape.
type Counter struct {
	Name, Help string
	Value      func() float64
}

// Config names the counters: every name is namespace_subsystem_Name, with
// ConstLabels added to every counter.
type Config struct {
	Namespace, Subsystem string
	ConstLabels          prometheus.Labels
}

// Register registers every counter with reg (prometheus.DefaultRegisterer if
// nil). It registers as many as it can and returns every failure, each
// named by owner and the counter's name.
func Register(reg prometheus.Registerer, owner string, opts Config, counters []Counter) error {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	var errs []error
	for _, c := range counters {
		err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: opts.Namespace, Subsystem: opts.Subsystem, Name: c.Name, Help: c.Help, ConstLabels: opts.ConstLabels,
		}, c.Value))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: register %s: %w", owner, c.Name, err))
		}
	}
	return errors.Join(errs...)
}
