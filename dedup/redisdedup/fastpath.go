package redisdedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
)

// FastPathConfig configures a [FastPath].
type FastPathConfig struct {
	// KeyPrefix starts every marker key. Defaults to DefaultKeyPrefix
	// ("idemq:"). It must not contain '{' or '}'.
	KeyPrefix string
	// TTL is how long a done marker lives. Set it to the inner store's
	// retention (dedup.Retention.Keep): a marker that outlives the inner
	// row only answers for a key the inner store has forgotten, and a
	// shorter TTL only costs database lookups. Defaults to 7 days.
	TTL time.Duration
	// Timeout bounds each Redis call, so that a hung Redis delays a
	// delivery by at most this much before the fast path falls back to the
	// inner store. Defaults to 100 milliseconds.
	Timeout time.Duration
	// RetryInterval is how long the fast path leaves Redis alone after a
	// failed lookup: deliveries in that window go straight to the inner
	// store (and count as fallbacks) instead of each waiting for Timeout.
	// A negative value asks Redis on every delivery. Defaults to 1 second.
	RetryInterval time.Duration
	// Logger receives rate-limited warnings about fallbacks and failed
	// marker writes. Defaults to slog.Default().
	Logger *slog.Logger
	// LogEvery is the least time between two log lines of the same kind;
	// the lines held back in between are counted in the next one.
	// Defaults to 10 seconds.
	LogEvery time.Duration
	// MarkerQueue, if positive, moves the done marker write off the
	// delivery: the marker of a Processed delivery is queued (at most
	// MarkerQueue markers wait) and written in the background in pipelined
	// batches, so that a fresh message costs one Redis round trip (the
	// lookup) instead of two. A full queue drops the marker and counts it
	// in FastPathStats.MarkersDropped; a marker that is dropped, fails, or
	// is lost in a crash only sends the next duplicate of its key to the
	// inner store, which answers it. Call Close at shutdown to write what
	// is queued. Zero (the default) writes the marker before Process
	// returns.
	MarkerQueue int
	// MarkerBatch is the most markers one pipelined background write
	// carries. Defaults to 256; used only with MarkerQueue.
	MarkerBatch int
	// onFallback, if set, is called for every fallback (tests synchronise
	// on it; users read FastPathStats.Fallbacks or the metrics).
	onFallback func(err error)
}

// FastPathStats are counters of a [FastPath] since it was built.
type FastPathStats struct {
	// Hits are deliveries answered Duplicate from a Redis marker.
	Hits uint64
	// Misses are deliveries Redis had no marker for; they went to the
	// inner store.
	Misses uint64
	// Fallbacks are deliveries that went to the inner store because Redis
	// failed, timed out, or was being left alone after a failure.
	Fallbacks uint64
	// MarkerWrites are done markers written after the inner store
	// reported Processed.
	MarkerWrites uint64
	// MarkerWriteErrors are done markers that could not be written. They
	// never fail a delivery: the inner store stays the authority.
	MarkerWriteErrors uint64
	// MarkersDropped are done markers not written because the background
	// queue (FastPathConfig.MarkerQueue) was full.
	MarkersDropped uint64
}

// FastPath is a [dedup.Store] that answers duplicates from a done marker in
// Redis and sends everything else to an inner store, which stays the
// authority. See the package documentation for its guarantees.
type FastPath struct {
	inner         dedup.Store
	client        redis.UniversalClient
	prefix        string
	ttl           time.Duration
	retryInterval time.Duration
	call          caller
	onFallback    func(error)
	// addr names the Redis server(s) in errors and warnings.
	addr string
	// lastErr is the last failure of a Redis call, reported with the
	// fallbacks of deliveries that skip Redis after it.
	lastErr atomic.Pointer[error]

	fallbackLog logLimiter
	markerLog   logLimiter

	downUntil atomic.Int64 // unix nanoseconds; Redis is left alone until then

	queue *markerQueue // nil: markers are written before Process returns

	hits, misses, fallbacks, markerWrites, markerWriteErrors, markersDropped atomic.Uint64
}

// NewFastPath returns a FastPath in front of inner, keeping its markers in
// client. It returns an error if inner or client is nil or cfg is invalid.
func NewFastPath(inner dedup.Store, client redis.UniversalClient, cfg FastPathConfig) (*FastPath, error) {
	if isNil(inner) {
		return nil, errors.New("redisdedup: nil inner store")
	}
	if isNil(client) {
		return nil, errors.New("redisdedup: nil redis client")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if err := validatePrefix(cfg.KeyPrefix); err != nil {
		return nil, err
	}
	if cfg.TTL == 0 {
		cfg.TTL = 7 * 24 * time.Hour
	}
	if cfg.TTL < time.Millisecond {
		return nil, fmt.Errorf("redisdedup: marker TTL %s is shorter than a millisecond", cfg.TTL)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 100 * time.Millisecond
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("redisdedup: negative timeout %s", cfg.Timeout)
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.LogEvery == 0 {
		cfg.LogEvery = 10 * time.Second
	}
	if cfg.LogEvery < 0 {
		return nil, fmt.Errorf("redisdedup: negative LogEvery %s", cfg.LogEvery)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MarkerQueue < 0 {
		return nil, fmt.Errorf("redisdedup: negative MarkerQueue %d", cfg.MarkerQueue)
	}
	if cfg.MarkerBatch < 0 {
		return nil, fmt.Errorf("redisdedup: negative MarkerBatch %d", cfg.MarkerBatch)
	}
	if cfg.MarkerBatch == 0 {
		cfg.MarkerBatch = 256
	}
	f := &FastPath{
		inner:         inner,
		client:        client,
		prefix:        cfg.KeyPrefix,
		ttl:           cfg.TTL,
		retryInterval: cfg.RetryInterval,
		call:          newCaller(client, cfg.Timeout),
		onFallback:    cfg.onFallback,
		addr:          Addr(client),
		fallbackLog:   logLimiter{logger: cfg.Logger, every: cfg.LogEvery},
		markerLog:     logLimiter{logger: cfg.Logger, every: cfg.LogEvery},
	}
	if cfg.MarkerQueue > 0 {
		f.startMarkerQueue(cfg.MarkerQueue, cfg.MarkerBatch)
	}
	return f, nil
}

// errLeftAlone is the fallback cause of deliveries that skipped Redis
// because a recent call failed.
var errLeftAlone = errors.New("redisdedup: redis skipped after a recent failure")

// Process answers Duplicate (with FastPath set) if Redis holds a done
// marker for the key, without calling the inner store or fn. Otherwise it
// calls the inner store and, when that reports Processed (this delivery's
// own commit returned success), writes the marker, best effort. A Duplicate
// answer never writes a marker: see the package documentation for why. If
// Redis cannot be asked, Process falls back to the inner store: it never
// runs fn without the inner store's dedup.
func (f *FastPath) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	if err := req.Validate(); err != nil {
		return dedup.Result{}, err
	}
	if fn == nil {
		return dedup.Result{}, dedup.ErrNilFunc
	}
	if f.leftAlone() {
		f.fellBack(ctx, req, errLeftAlone)
		return f.inner.Process(ctx, req, fn)
	}

	key := redisKey(f.prefix, kindMarker, req.Group, req.Key)
	var (
		stored string
		found  bool
	)
	err := f.call.do(ctx, func(ctx context.Context) error {
		v, err := f.client.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
		stored, found = v, true
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			// The caller gave up; the inner store would fail the same way.
			return dedup.Result{}, fmt.Errorf("redisdedup: %w", ctx.Err())
		}
		f.redisFailed(err)
		f.fellBack(ctx, req, err)
		return f.inner.Process(ctx, req, fn)
	}
	if found {
		f.hits.Add(1)
		return dedup.Result{
			Outcome:  dedup.Duplicate,
			FastPath: true,
			Mismatch: stored != "" && req.Fingerprint != "" && stored != req.Fingerprint,
		}, nil
	}

	f.misses.Add(1)
	res, err := f.inner.Process(ctx, req, fn)
	if err != nil {
		return res, err
	}
	// Only a delivery whose own commit returned success may vouch for
	// the key. A Duplicate answer may rest on a row another session
	// committed but the database has not made durable yet (InnoDB shows a
	// commit to other sessions before its redo log is flushed); a marker
	// written from it would outlive that row if the database crashed, and
	// swallow the redelivery of the message the crash undid.
	if res.Outcome == dedup.Processed && (f.queue == nil || !f.enqueueMarker(key, req)) {
		f.writeMarker(ctx, key, req)
	}
	return res, nil
}

// writeMarker records (group, key) as done, with the request's
// fingerprint. Failures are counted and logged, never returned.
func (f *FastPath) writeMarker(ctx context.Context, key string, req dedup.Request) {
	// The delivery is decided; a caller cancelling now must not cost the
	// marker.
	ctx = context.WithoutCancel(ctx)
	err := f.call.do(ctx, func(ctx context.Context) error {
		return f.client.Set(ctx, key, req.Fingerprint, f.ttl).Err()
	})
	if err != nil {
		f.markerWriteErrors.Add(1)
		f.markerLog.log(ctx, slog.LevelWarn, "redisdedup: could not write done marker; duplicates of this key will be checked by the inner store",
			slog.String("group", req.Group), slog.String("key", req.Key), slog.Any("error", err))
		return
	}
	f.markerWrites.Add(1)
}

// leftAlone reports whether Redis failed recently enough to be skipped.
func (f *FastPath) leftAlone() bool {
	if f.retryInterval < 0 {
		return false
	}
	until := f.downUntil.Load()
	return until != 0 && time.Now().UnixNano() < until
}

func (f *FastPath) redisFailed(err error) {
	f.lastErr.Store(&err)
	if f.retryInterval > 0 {
		f.downUntil.Store(time.Now().Add(f.retryInterval).UnixNano())
	}
}

func (f *FastPath) fellBack(ctx context.Context, req dedup.Request, err error) {
	f.fallbacks.Add(1)
	if f.onFallback != nil {
		f.onFallback(err)
	}
	attrs := []slog.Attr{slog.String("redis", f.addr), slog.String("group", req.Group), slog.Any("error", err)}
	if errors.Is(err, errLeftAlone) {
		if last := f.lastErr.Load(); last != nil {
			attrs = append(attrs, slog.Any("cause", *last))
		}
	}
	f.fallbackLog.log(ctx, slog.LevelWarn, "redisdedup: redis unavailable, deduplicating through the inner store", attrs...)
}

// Addr names the server(s) client talks to, for errors and logs: the
// address of a *redis.Client, the seed addresses of a cluster or a ring
// (comma-separated), "" for any other client.
func Addr(client redis.UniversalClient) string {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	case *redis.Ring:
		addrs := make([]string, 0, len(c.Options().Addrs))
		for _, a := range c.Options().Addrs {
			addrs = append(addrs, a)
		}
		slices.Sort(addrs)
		return strings.Join(addrs, ",")
	}
	return ""
}

// DefaultPingTimeout bounds Ping when its context has no deadline.
const DefaultPingTimeout = 5 * time.Second

// Ping sends PING to the Redis server behind client and returns an error
// that names its address (see Addr) and the cause if it does not answer
// within ctx's deadline (DefaultPingTimeout if ctx has none). A consumer
// calls it at Start, so that a wrong address is found there rather than as
// a fallback warning on every delivery.
func Ping(ctx context.Context, client redis.UniversalClient) error {
	if isNil(client) {
		return errors.New("redisdedup: nil redis client")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPingTimeout)
		defer cancel()
	}
	begin := time.Now()
	// A client built without ContextTimeoutEnabled keeps reading past
	// ctx's deadline, up to its ReadTimeout: do not wait for it.
	answer := make(chan error, 1)
	go func() { answer <- client.Ping(ctx).Err() }()
	var err error
	select {
	case err = <-answer:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		return nil
	}
	took := time.Since(begin).Round(time.Millisecond)
	addr := Addr(client)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || isNetTimeout(err) {
		// The client retries its dials until the deadline and reports only
		// that: find the cause with one dial of our own.
		return fmt.Errorf("redisdedup: redis at %s does not answer PING (after %s: %s): %w",
			addr, took, dialCause(addr), err)
	}
	return fmt.Errorf("redisdedup: redis at %s does not answer PING (after %s): %w", addr, took, err)
}

// dialCause dials the first address of addrs (comma-separated) and says
// why a connection fails, or that it succeeds.
func dialCause(addrs string) string {
	addr, _, _ := strings.Cut(addrs, ",")
	if addr == "" {
		return "address unknown"
	}
	c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	_ = c.Close()
	return "it accepts TCP connections but does not answer"
}

// Check pings Redis (see Ping), then checks the inner store if it
// implements dedup.Checker. It implements dedup.Checker: a consumer calls
// it at Start.
func (f *FastPath) Check(ctx context.Context) error {
	if err := Ping(ctx, f.client); err != nil {
		return err
	}
	if c, ok := f.inner.(dedup.Checker); ok {
		return c.Check(ctx)
	}
	return nil
}

// Check pings Redis (see Ping). It implements dedup.Checker: a consumer
// calls it at Start.
func (s *LeaseStore) Check(ctx context.Context) error {
	return Ping(ctx, s.client)
}

// Inner returns the store the fast path is in front of, the authority.
func (f *FastPath) Inner() dedup.Store { return f.inner }

// Stats returns the fast path's counters.
func (f *FastPath) Stats() FastPathStats {
	return FastPathStats{
		Hits:              f.hits.Load(),
		Misses:            f.misses.Load(),
		Fallbacks:         f.fallbacks.Load(),
		MarkerWrites:      f.markerWrites.Load(),
		MarkerWriteErrors: f.markerWriteErrors.Load(),
		MarkersDropped:    f.markersDropped.Load(),
	}
}

// Forget deletes the done marker of (group, key), so that the next delivery
// is decided by the inner store. Redrive paths call it after clearing a
// key's dead mark or attempts in the inner store's database. With
// background marker writes it first waits for the markers queued before it
// (Flush), so that a queued marker of the key cannot reappear after it.
func (f *FastPath) Forget(ctx context.Context, group, key string) error {
	if err := validateGroupKey(group, key); err != nil {
		return err
	}
	if err := f.Flush(ctx); err != nil {
		return fmt.Errorf("redisdedup: forget marker of %q in group %q: %w", key, group, err)
	}
	rk := redisKey(f.prefix, kindMarker, group, key)
	err := f.call.do(ctx, func(ctx context.Context) error {
		return f.client.Del(ctx, rk).Err()
	})
	if err != nil {
		return fmt.Errorf("redisdedup: forget marker of %q in group %q: %w", key, group, err)
	}
	return nil
}

// deadMarker returns the inner store as a dedup.DeadMarker.
func (f *FastPath) deadMarker() (dedup.DeadMarker, error) {
	dm, ok := f.inner.(dedup.DeadMarker)
	if !ok {
		return nil, fmt.Errorf("redisdedup: inner store %T does not record dead keys: %w", f.inner, errors.ErrUnsupported)
	}
	return dm, nil
}

// MarkDead records the key as dead in the inner store. It returns an error
// wrapping errors.ErrUnsupported if the inner store does not implement
// dedup.DeadMarker. Dead keys never get a Redis marker, so redeliveries of
// a dead key are answered by the inner store.
func (f *FastPath) MarkDead(ctx context.Context, group, key string) error {
	if err := validateGroupKey(group, key); err != nil {
		return err
	}
	dm, err := f.deadMarker()
	if err != nil {
		return err
	}
	return dm.MarkDead(ctx, group, key)
}

// ClearDead removes the key's dead mark in the inner store, then deletes
// any Redis marker of the key. A redrive does not need it: a dead key never
// gets a marker (only a delivery the inner store processed writes one), so
// the redriven message reaches the inner store whether or not ClearDead
// ran; the marker deletion only matters for a key that was processed and
// then deliberately made dead and redriven (see Forget). It returns an error wrapping errors.ErrUnsupported if
// the inner store does not implement dedup.DeadMarker, and an error if the
// marker could not be deleted (the dead mark is cleared by then; calling
// ClearDead again is safe).
func (f *FastPath) ClearDead(ctx context.Context, group, key string) error {
	if err := validateGroupKey(group, key); err != nil {
		return err
	}
	dm, err := f.deadMarker()
	if err != nil {
		return err
	}
	if err := dm.ClearDead(ctx, group, key); err != nil {
		return err
	}
	return f.Forget(ctx, group, key)
}

var (
	_ dedup.Store      = (*FastPath)(nil)
	_ dedup.DeadMarker = (*FastPath)(nil)
	_ dedup.Checker    = (*FastPath)(nil)
	_ dedup.Checker    = (*LeaseStore)(nil)
)
