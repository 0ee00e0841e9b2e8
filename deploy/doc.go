// Package deploy holds what operators deploy next to idemq: Prometheus
// alert rules (prometheus/idemq-alerts.yml, unit-tested in
// prometheus/idemq-alerts.test.yml) and a Grafana dashboard
// (grafana/idemq-dashboard.json). It has no Go API; its tests run
// `promtool check rules` and `promtool test rules`, and check that every
// metric the rules and the dashboard read is one idemq exports and that
// docs/metrics.md and docs/operations.md document every metric and alert.
package deploy
