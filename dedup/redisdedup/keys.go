package redisdedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/internal/token"
)

// DefaultKeyPrefix is the prefix of every Redis key this package writes
// unless a config names another.
const DefaultKeyPrefix = "idemq:"

// Key kinds: the fast path's done markers and the lease store's claims live
// in separate key spaces, so a FastPath in front of a LeaseStore on the same
// Redis and prefix never confuses one for the other.
const (
	kindMarker = "d:"
	kindLease  = "l:"
)

// redisKey builds the Redis key of (group, key) in one key space:
//
//	<prefix><kind><len(group)>:<group>:<key>
//
// The decimal byte length of the group makes the layout injective even
// when groups or keys contain ':' (group "a:b" with key "c" and group "a"
// with key "b:c" give different Redis keys). No hash tag is used: every
// operation touches a single key, so in Redis Cluster the keys of one group
// spread over all slots instead of piling onto one node.
func redisKey(prefix, kind, group, key string) string {
	n := strconv.Itoa(len(group))
	b := make([]byte, 0, len(prefix)+len(kind)+len(n)+len(group)+len(key)+2)
	b = append(b, prefix...)
	b = append(b, kind...)
	b = append(b, n...)
	b = append(b, ':')
	b = append(b, group...)
	b = append(b, ':')
	b = append(b, key...)
	return string(b)
}

// validateGroupKey checks a (group, key) pair given outside a Request.
func validateGroupKey(group, key string) error {
	return dedup.Request{Group: group, Key: key}.Validate()
}

// validatePrefix rejects prefixes that would make keys ambiguous or that
// would pin every key to one Redis Cluster slot.
func validatePrefix(prefix string) error {
	if len(prefix) > idemq.MaxKeyLen {
		return fmt.Errorf("redisdedup: key prefix longer than %d bytes", idemq.MaxKeyLen)
	}
	for i := 0; i < len(prefix); i++ {
		switch prefix[i] {
		case '{', '}':
			// A hash tag in the prefix would send every key to one slot.
			return errors.New("redisdedup: key prefix must not contain '{' or '}' (it would pin all keys to one cluster slot)")
		case 0:
			return errors.New("redisdedup: key prefix contains NUL")
		}
	}
	return nil
}

// newOwnerToken returns a random 128-bit token, hex-encoded.
func newOwnerToken() (string, error) {
	t, err := token.New()
	if err != nil {
		return "", fmt.Errorf("redisdedup: %w", err)
	}
	return t, nil
}

// isNil reports whether v is nil or a typed nil pointer, map, func or
// interface value.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Interface, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// caller runs Redis calls with a per-call time limit.
//
// go-redis only applies a context deadline to the socket when the client was
// built with ContextTimeoutEnabled; otherwise a hung server blocks a call
// until the client's ReadTimeout (seconds). When the client does not honour
// deadlines, caller runs the call in a goroutine and stops waiting for it at
// the limit; the abandoned call finishes or fails on its own at the client's
// ReadTimeout.
type caller struct {
	timeout time.Duration
	direct  bool // the client applies context deadlines itself
}

func newCaller(client redis.UniversalClient, timeout time.Duration) caller {
	return caller{timeout: timeout, direct: honoursContextDeadline(client)}
}

// honoursContextDeadline reports whether the client was built with
// ContextTimeoutEnabled.
func honoursContextDeadline(client redis.UniversalClient) bool {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// do runs f with a context limited to the call timeout.
func (c caller) do(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.direct {
		err := f(ctx)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && (isNetTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded)) {
			// The socket deadline (taken from ctx) fired: report it as the
			// timeout it is.
			return fmt.Errorf("redisdedup: redis call timed out after %s: %w (%w)", c.timeout, context.DeadlineExceeded, err)
		}
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if cause := context.Cause(ctx); errors.Is(cause, context.DeadlineExceeded) {
			return fmt.Errorf("redisdedup: redis call timed out after %s: %w", c.timeout, context.DeadlineExceeded)
		}
		return ctx.Err()
	}
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// logLimiter lets one log line through per interval and counts the lines it
// held back.
type logLimiter struct {
	logger     *slog.Logger
	every      time.Duration
	last       atomic.Int64 // unix nanoseconds of the last line let through
	suppressed atomic.Int64
}

func (l *logLimiter) log(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if l.logger == nil || !l.logger.Enabled(ctx, level) {
		return
	}
	now := time.Now().UnixNano()
	last := l.last.Load()
	if last != 0 && now-last < int64(l.every) {
		l.suppressed.Add(1)
		return
	}
	if !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, slog.Int64("suppressed", n))
	}
	l.logger.LogAttrs(ctx, level, msg, attrs...)
}

// unavailableReplies are the prefixes of the Redis error replies that say
// Redis cannot serve the command now, rather than that the command is
// wrong: loading its data set after a restart, a read-only replica (after
// a failover), a replica without its master, a cluster that is down or
// resharding, a busy script, out of memory, too few replicas, a failed
// snapshot, too many clients.
var unavailableReplies = []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN",
	"BUSY", "OOM", "NOREPLICAS", "MISCONF", "max number of clients"}

// storeError classifies the error of a Redis call made for a delivery: a
// Redis that could not be reached, did not answer within the call timeout,
// or answered that it cannot serve now is wrapped in dedup.Unavailable, so
// that middleware counts no attempt and the consumer pauses. The caller's
// own cancellation and other error replies pass unchanged.
func storeError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		for _, p := range unavailableReplies {
			if redis.HasErrorPrefix(err, p) {
				return dedup.Unavailable(err)
			}
		}
		return err
	}
	return dedup.Unavailable(err)
}
