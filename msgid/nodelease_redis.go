package msgid

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Each node has two keys: <prefix>node:<id> holds the owner token with a PX
// expiry (the lease), and <prefix>node:<id>:last holds the high-water mark
// with no expiry. While a lease is held, :last is kept at or above the
// lease's deadline (Redis clock) and the holder's reservation (its own
// clock plus TTL, beyond which it issues nothing), so a holder that dies
// without recording what it issued still leaves a mark above every ID it
// issued, which the next holder waits past.

// acquireScript: KEYS[1] lease, KEYS[2] mark; ARGV[1] owner, ARGV[2] ttl ms.
// Returns the previous mark, or -1 if the node is held.
var acquireScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local mark = math.max(last, now + tonumber(ARGV[2]))
redis.call('SET', KEYS[2], string.format('%d', mark))
return last
`)

// renewScript: KEYS[1] lease, KEYS[2] mark; ARGV[1] owner, ARGV[2] ttl ms,
// ARGV[3] the holder's reservation ms. Returns 1 if renewed, 0 if the lease is not ours.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local mark = math.max(last, now + tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('SET', KEYS[2], string.format('%d', mark))
return 1
`)

// releaseScript: KEYS[1] lease, KEYS[2] mark; ARGV[1] owner, ARGV[2] issued
// ms. The holder knows exactly what it issued, so the mark drops to that.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
`)

type redisLease struct {
	c      redis.UniversalClient
	prefix string
	ttlMs  int64
}

// NewRedisNodeLease returns a lease of a snowflake node ID from Redis. It
// checks cfg and touches no server; Start acquires the node: SET NX PX on
// <cfg.KeyPrefix>node:<id>, renewed every TTL/3 and released by scripts that
// check the owner token. Expiry is judged by the Redis server's clock. The
// high-water mark lives in <cfg.KeyPrefix>node:<id>:last, where the holder
// also reserves timestamps up to its own clock plus TTL (it issues none
// above its reservation); the new holder's IDs start strictly after it. The lease is as durable as Redis: a failover
// that loses the lease key can hand the node to a second process while the
// first still holds it, so prefer the SQL lease where that matters.
//
// In a Redis Cluster both keys of a node share a hash slot only if the
// prefix has a hash tag, e.g. "{idemq}:".
func NewRedisNodeLease(client redis.UniversalClient, cfg NodeLeaseConfig) (*NodeLease, error) {
	if client == nil {
		return nil, errors.New("msgid: nil redis client")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	b := &redisLease{c: client, prefix: cfg.KeyPrefix, ttlMs: cfg.TTL.Milliseconds()}
	return newLease(b, cfg, nil), nil
}

func (b *redisLease) kind() string { return "redis" }

func (b *redisLease) keys(node int64) []string {
	k := b.prefix + "node:" + strconv.FormatInt(node, 10)
	return []string{k, k + ":last"}
}

func (b *redisLease) acquire(ctx context.Context, owner string, lo, hi int64) (int64, int64, error) {
	n := hi - lo + 1
	off := rand.Int64N(n)
	for i := int64(0); i < n; i++ {
		id := lo + (off+i)%n
		last, err := acquireScript.Run(ctx, b.c, b.keys(id), owner, b.ttlMs).Int64()
		if err != nil {
			return 0, 0, fmt.Errorf("msgid: claim node %d in redis: %w", id, err)
		}
		if last >= 0 {
			return id, last, nil
		}
	}
	return 0, 0, fmt.Errorf("%w in %d..%d (redis %snode:*)", ErrNoFreeNode, lo, hi, b.prefix)
}

func (b *redisLease) renew(ctx context.Context, owner string, node, markMs int64) (bool, error) {
	n, err := renewScript.Run(ctx, b.c, b.keys(node), owner, b.ttlMs, markMs).Int64()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

func (b *redisLease) release(ctx context.Context, owner string, node, lastMs int64) error {
	return releaseScript.Run(ctx, b.c, b.keys(node), owner, lastMs).Err()
}
