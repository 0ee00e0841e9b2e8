package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedis returns a go-redis client for the test Redis server
// ([RedisAddr]), checked with a PING and closed when the test ends. It skips
// (or fails under CI=true) when IDEMQ_REDIS_ADDR is unset, and fails when
// the server does not answer. Keep keys under a [KeyPrefix].
func NewRedis(t testing.TB) *redis.Client {
	t.Helper()
	return NewRedisAt(t, RedisAddr(t))
}

// NewRedisAt is [NewRedis] for a given address, such as a [Proxy] in front
// of the test server.
func NewRedisAt(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: redis %s: PING: %v", addr, err)
	}
	return c
}

// KeyPrefix returns a Redis key prefix unique to this call, such as
// "idemq:test:3f9a1c2d04b7:", so tests sharing one Redis server never see
// each other's keys. When IDEMQ_REDIS_ADDR is set, the keys under the
// prefix are deleted when the test ends (straight on the server, not through
// any proxy the test cut).
func KeyPrefix(t testing.TB) string {
	t.Helper()
	prefix := "idemq:test:" + randomHex(t, 6) + ":"
	if addr := os.Getenv(EnvRedisAddr); addr != "" {
		t.Cleanup(func() {
			if err := deleteKeys(addr, prefix); err != nil {
				t.Errorf("testenv: delete redis keys %s*: %v", prefix, err)
			}
		})
	}
	return prefix
}

func deleteKeys(addr, prefix string) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return c.Unlink(ctx, batch...).Err()
	}
	return nil
}
