// Package producer sends idemq messages to Apache RocketMQ (through
// github.com/apache/rocketmq-client-go/v2) with a message ID that survives
// every re-send, and issues those IDs.
//
// # Message IDs
//
// Every message gets a snowflake ID (the layout of
// github.com/bwmarrin/snowflake: 41 bits of milliseconds since Nov 2010, 10
// bits of node, 12 bits of sequence) before its first send. [Producer.Stamp]
// writes it to msg.ID, to the property idemq.PropertyMessageID and to the
// RocketMQ Keys, so operators can query by it. A message that already has
// an ID keeps it: re-sending the same *idemq.Message, an outbox relay
// re-sending a row, or a redrive of a dead letter all carry the same ID, and
// consumers deduplicate by it. RocketMQ's own MsgId (UNIQ_KEY) is new for
// each send and is not used as the identity.
//
// An [IDGenerator] issues IDs for one node ID, which must never be shared by
// two live processes. Take it from configuration ([FixedNode]; the operator
// guarantees uniqueness) or lease it: [NewSQLNodeLease] (PostgreSQL,
// MySQL/MariaDB, SQLite) or [NewRedisNodeLease]. A lease is claimed with an
// atomic conditional write judged by the store's clock, renewed every TTL/3,
// and owner-checked on every renewal. The generator refuses to issue IDs
// ([ErrNodeLeaseLost]) once the lease is taken by someone else, is closed,
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
// confirmed ([ErrBeyondReservation]); Close replaces the reservation with
// the exact last timestamp issued. So a holder that died without Close
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
//
// # Sending
//
// [New] creates a [Producer] and starts its client (there is no separate
// Start); [Producer.Shutdown] stops it. Sends: [Producer.SendSync] (waits for
// the broker; a status other than SEND_OK is an error wrapping
// [ErrSendNotOK], though the message may be stored), [Producer.Send] (the
// outbox relay's Sender), [Producer.SendAsync] (SendSync in a bounded pool of
// goroutines: the client's own SendAsync panics when the connection fails),
// [Producer.SendOneWay] (no confirmation: may lose messages),
// [Producer.SendOrdered] (one queue per sharding key) and
// [Producer.SendBatch]. [WithDelayLevel] delays a message. Messages that can
// never be sent (no topic, empty or reserved property names, separator bytes)
// are refused with an idemq.Permanent error wrapping [ErrInvalidMessage];
// properties with empty values are not sent (RocketMQ cannot carry them).
//
// At least once, not exactly once: a send whose reply is lost is reported as
// failed although the broker stored the message, and a retry stores a second
// copy with the same ID. Consumers must deduplicate (package dedup).
//
// # Transactional messages
//
// A [TransactionProducer] sends a half message, runs the caller's function
// in a database transaction that also records the message ID in
// <prefix>tx_records, and commits or rolls back the message to match. When
// the broker's commit notice is lost or the process dies, the broker asks a
// producer of the group, which answers from the record table alone: record
// present, commit; absent and the message older than CheckGrace, roll back;
// otherwise ask again later. Local transactions that run longer than
// CheckGrace/2 are rolled back, so a record cannot appear after a rollback
// was decided. rocketmq-client-go learns broker addresses only from topics
// it sends to, so a restarted transaction producer receives check-backs
// only after its first send; keep at least one producer of the group
// sending.
//
// # Tables and logging
//
// Both SQL tables are created and upgraded by versioned migration steps
// when asked (Migrate; the `idemq migrate` command runs the same steps), or
// from the plain SQL that [Schema] returns. Table names take a
// prefix matching ^[a-z][a-z0-9_]{0,30}$. [SetClientLogger] routes the
// client library's logs into log/slog; call it once, before creating
// clients.
package producer
