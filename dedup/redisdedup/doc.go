// Package redisdedup keeps dedup state in Redis: a fast path in front of
// another store, and a Redis-only store in lease mode.
//
// # Fast path
//
// [FastPath] wraps another [dedup.Store] (usually the transactional or
// lease-mode SQL store). For every delivery it reads a done marker for
// (group, key) from Redis:
//
//   - marker present: the delivery is a Duplicate (Result.FastPath set) and
//     neither the inner store nor the handler is called. Mismatch is set
//     when the marker's fingerprint and the request's are both set and
//     differ.
//   - marker absent: the inner store decides, exactly as without the fast
//     path. When it reports Processed, the marker is written with the
//     request's fingerprint and a TTL, best effort: a failed write is
//     counted and logged, never returned. A Duplicate answer writes no
//     marker (see below).
//   - Redis unreachable or slower than the call timeout: the delivery goes
//     to the inner store, which still deduplicates it; the fallback is
//     counted, logged (rate-limited) and reported to a hook. The fast path
//     never runs a handler without the inner store's dedup.
//
// [FastPath.Stats] returns the counters; [FastPath.RegisterMetrics] exports
// them to Prometheus (alert on the rate of
// idemq_redis_fastpath_fallbacks_total).
//
// What the fast path guarantees is what the inner store guarantees: the
// inner store stays the authority, and the only thing Redis can say is "this
// key is done", which it learns from the inner store after the fact. Busy
// and dead keys are never cached.
//
// A marker is written only by the delivery whose own commit returned
// success, never from a Duplicate answer. A commit that returned success
// is durable (with the database's durable settings: InnoDB's
// innodb_flush_log_at_trx_commit=1, PostgreSQL's fsync and
// synchronous_commit on); a row another session merely sees is not. InnoDB
// makes a committed row visible to other sessions before its redo log is
// on disk, so a duplicate delivery can be told "done" by a row that a crash
// of the database then takes away. A marker written from that answer would
// survive the crash in Redis and swallow the redelivery of the very message
// the crash undid: a lost message. Without that marker the redelivery goes
// to the database, finds no row, and is processed. The price is small: a
// key whose marker was lost (a Redis restart, a failed marker write) is
// answered by the database for the rest of its life, not re-cached by its
// duplicates. Losing markers (a Redis restart or failover) only costs
// database lookups.
//
// # Redrive needs nothing from the fast path
//
// A dead-lettered key never has a marker: a delivery that failed wrote
// none, and the Duplicate answers its redeliveries get (Result.Dead) write
// none either. So a redrive of a dead letter (admin.RedriveDead, `idemq
// dead redrive`, or the Redrive of the store's dedup.Ledger), which clears
// the dead mark and the attempts in the database and re-publishes the
// message with its message ID, is delivered to the handler through the
// fast path as it is: no [FastPath.ClearDead] or [FastPath.Forget] is
// needed, and admin calls neither.
//
// A marker can be stale only for a key that was processed: call
// [FastPath.Forget] if an operator deliberately makes a done key new again
// in the database (deletes its row to have a message processed twice), or
// the marker keeps answering Duplicate until its TTL ends. Give the marker
// the same TTL as the inner store's retention, so that it does not answer
// for a row the retention has deleted. [FastPath.ClearDead] exists for
// callers that clear a dead mark by hand through the fast path; it does
// what the inner store's ClearDead does, and also drops a marker in case
// one was written by such a deliberate reset.
//
// # Background marker writes
//
// With FastPathConfig.MarkerQueue set, the marker of a Processed delivery
// is queued and written in the background, in pipelined batches, so that a
// fresh message costs one Redis round trip (the lookup) instead of two. A
// marker is still written only for a delivery whose own commit returned
// Processed; the queue changes when it is written, never whether. A crash
// before the inner commit returned leaves no row and no marker (the
// redelivery is processed); a crash after it, with the marker still queued,
// leaves a committed row and no marker (the next duplicate is answered
// Duplicate by the inner store, which writes no marker); a full queue drops
// the marker and counts it (FastPathStats.MarkersDropped), with the same
// effect. Call [FastPath.Close] at shutdown to write what is queued;
// [FastPath.Forget] waits for the markers queued before it.
//
// # Redis-only lease store
//
// [LeaseStore] keeps lease mode entirely in Redis, for effects outside any
// database. Process claims the key with a script (SET PX if the key is
// free) whose value carries a fencing token (the Redis clock in
// microseconds) and a random 128-bit owner token, runs the handler under a
// dedup.LeaseKeeper (the one the SQL store uses in lease mode, so both
// behave the same) that renews the lease every Lease/3 with an
// owner-checked script, and on success turns the claim into a done mark
// (TTL = retention) with another owner-checked script. A handler error or
// panic releases the claim (owner-checked); an expired lease is taken over
// by the next delivery; a zombie whose lease was taken over cannot mark
// the key done (its Process fails with dedup.ErrLeaseLost) nor release its
// successor's claim. The handler's context ends Lease/5 before the lease
// could expire, counted from when the claim or the last confirmed renewal
// was sent, by the clock itself (a process resumed after a pause sees
// ctx.Err() != nil at once); a renewal that fails or is not confirmed in
// time ends it at once, with a cause wrapping dedup.ErrLeaseLost; renewals
// do not stop when the delivery is cancelled, only when the handler
// returns. dedup.Fence(ctx) gives the handler the fencing token to pass to
// an external API that refuses lower ones.
//
// A Redis that cannot be reached, does not answer within the call timeout,
// or answers that it cannot serve now (LOADING, READONLY, MASTERDOWN,
// CLUSTERDOWN, TRYAGAIN, BUSY, OOM, ...) fails Process (the claim, or the
// done mark after a handler that succeeded), MarkDead and ClearDead with an
// error wrapping dedup.ErrUnavailable: middleware counts no attempt and
// buries nothing, and the consumer pauses until Redis is back.
//
// This mode is weaker than the SQL stores, and says so:
//
//   - Redis replication is asynchronous. A failover, or a restart without
//     persistence, can lose done marks (a later redelivery runs the handler
//     again) and claims (a second owner can claim a key whose first owner
//     is still running).
//   - Done marks live as long as the retention, then the key is forgotten.
//   - As in every lease mode, an external effect can repeat if a process
//     dies after the effect and before the key is marked done; pass the
//     message ID to the external API as its idempotency key.
//   - A claim whose reply timed out may still have been applied; the key is
//     then Busy until its lease expires.
//
// # Keys
//
// Keys are <prefix><kind><len(group)>:<group>:<key>, with kind "d:" for
// fast-path markers and "l:" for lease-store keys. The group's byte length
// makes the layout unambiguous for groups and keys that contain ':'. No
// Redis Cluster hash tag is used: every operation touches one key, so the
// keys of one group spread over the whole cluster.
//
// # Timeouts
//
// Every Redis call is bounded by the configured timeout. go-redis only
// applies context deadlines to its sockets when the client is built with
// ContextTimeoutEnabled; with other clients this package stops waiting at
// the timeout and lets the abandoned call end at the client's own
// ReadTimeout. Enabling ContextTimeoutEnabled is cheaper.
package redisdedup
