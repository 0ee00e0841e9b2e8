// Package msgid issues idemq's message IDs: snowflake IDs (the layout of
// github.com/bwmarrin/snowflake: 41 bits of milliseconds since Nov 2010,
// 10 bits of node, 12 bits of sequence) from a [Generator] on a node ID
// that no two live processes share, and the node leases that guarantee it.
// The producers (package producer) and the outbox (package outbox) take a
// [Source], which *Generator implements, as their Config.IDSource; [Parse]
// reads an ID back.
//
// A lease has the lifecycle of every long-lived idemq value: its New checks
// its configuration and touches nothing, Start(ctx) acquires the node and
// starts the heartbeats, Shutdown(ctx) records the last timestamp issued
// and releases the node. Build the Generator after Start.
//
// A [Generator] issues IDs for one node ID, which must never be shared by
// two live processes. Take it from configuration ([FixedNode]; the operator
// guarantees uniqueness) or lease it: [NewSQLNodeLease] (PostgreSQL,
// MySQL/MariaDB, SQLite) or [NewRedisNodeLease]. A lease is claimed with an
// atomic conditional write judged by the store's clock, renewed every TTL/3,
// and owner-checked on every renewal. The generator refuses to issue IDs
// ([ErrNodeLeaseLost]) once the lease is taken by someone else, is shut down,
// or has gone TTL without a successful heartbeat (checked on every ID
// against the local monotonic clock, so a stalled heartbeat stops
// generation before the store can hand the node to another process).
//
// The generator reads the wall clock for every ID instead of using
// bwmarrin/snowflake's Node: that Node measures time from a monotonic
// reading taken at start, which cannot be compared with the timestamps of
// another process that held the node before. Timestamps never go below the
// last one issued; a clock that steps back is waited out up to
// MaxClockBackwards (5 s by default), beyond which NextID fails with
// [ErrClockBackwards]. A new lease holder issues only timestamps above the
// previous holder's high-water mark. At acquisition and on every heartbeat
// a holder reserves in the store the timestamps up to its own clock plus
// TTL, and its generator issues none above the reservation the store
// confirmed ([ErrBeyondReservation]); Shutdown replaces the reservation with
// the exact last timestamp issued. So a holder that died without Shutdown
// leaves a mark above every ID it issued, even if its clock ran ahead of
// everyone else's, and the next holder waits past it (a successor whose
// clock is behind the mark by more than MaxClockBackwards gets
// ErrClockBackwards until its clock catches up).
//
// Limits: uniqueness rests on the lease store. A Redis failover that loses
// the lease key can give a node to two processes; prefer the SQL lease where
// that matters. A store's clock that runs faster than the holder's by more
// than the heartbeat margin (TTL minus the time of one heartbeat) can hand
// the node over while the holder still issues; keep clocks synchronized.
package msgid
