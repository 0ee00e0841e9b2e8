// Package integration holds idemq's end-to-end tests: the real
// rocketmq-client-go producer and push consumer, the in-process test broker
// (package rmqtest), the middleware chain and a dedup store, together.
//
// The tests that run a live push consumer carry the build tag rocketmq and
// are named TestLive*, because rocketmq-client-go v2.1.2 races internally
// whenever a push consumer runs (upstream issue 961), so they cannot run
// under -race:
//
//	go test -tags rocketmq -run TestLive ./integration/
package integration
