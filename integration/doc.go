// Package integration holds idemq's end-to-end tests: the real
// rocketmq-client-go producer and push consumer, the in-process test broker
// (package rmqtest), the middleware chain and a dedup store, together.
//
// The tests that run a live push consumer carry the build tag rocketmq and
// are named TestLive*; scripts/test runs them under -race:
//
//	go test -race -tags rocketmq -run TestLive ./integration/
//
// A test that meets one of the data races still inside rocketmq-client-go
// (orderly consumers, Shutdown's close flag) carries the tag
// rocketmq_norace instead and runs without -race.
package integration
