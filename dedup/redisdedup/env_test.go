package redisdedup

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/internal/testenv"
)

// These tests run against the real Redis that scripts/test starts
// (IDEMQ_REDIS_ADDR); see package internal/testenv.

func redisAddr(t testing.TB) string { t.Helper(); return testenv.RedisAddr(t) }

func newRedis(t testing.TB) *redis.Client { t.Helper(); return testenv.NewRedis(t) }

// keyPrefix returns a key prefix unique to the test; its keys are deleted
// when the test ends.
func keyPrefix(t testing.TB) string { t.Helper(); return testenv.KeyPrefix(t) }

func newProxy(t testing.TB, target string) *testenv.Proxy {
	t.Helper()
	return testenv.NewProxy(t, target)
}

// newClient returns a client for addr (usually a proxy) that does not
// retry failed commands, so a cut link fails each call at once. It is
// closed when the test ends.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
