// Package middleware holds the chain built around an idemq.Handler: one
// middleware per file, each an idemq.Middleware, composed with idemq.Chain.
//
//   - Recover turns a panic into a retryable *PanicError.
//   - Dedup runs the handler through a dedup.Store, at most once per
//     (consumer group, dedup key), and maps the store's decision to the
//     delivery's result.
//   - Attempts keeps a durable count and error history of failed attempts
//     in a dedup.Ledger, outside the handler's transaction.
//   - DeadLetter buries permanent and exhausted failures in the ledger,
//     with the whole message, and acknowledges them.
//   - Timeout, Logging, Metrics (Prometheus) and Tracing (OpenTelemetry).
//   - RetryPolicy and RocketMQDelayLevel compute a redelivery delay for the
//     transport.
//
// Standard returns the recommended order; its documentation says why each
// middleware sits where it does. It takes the store once (a store that keeps
// a ledger, as sqldedup.Store does, is the ledger too), puts the Redis fast
// path in front of it when given a Redis client, registers every metric
// (the chain's and the fast path's) with one Registerer, and bounds every
// handler run with DefaultTimeout (30s) unless told otherwise. A transport
// learns each delivery's outcome through TrackOutcome; there are no
// per-event callbacks.
//
// # What the Standard chain guarantees
//
//   - A handler's panic never crashes the process; it is a retryable
//     failure, and in transactional mode it rolls the dedup transaction
//     back.
//   - The handler runs at most once per (group, key) as the store's mode
//     defines; in transactional mode its database effects happen exactly
//     once. Duplicates are acknowledged without calling it.
//   - A key held by another owner's live lease is redelivered later
//     (idemq.RetryAfter wrapping dedup.ErrBusy), never acknowledged, never
//     counted as a failed attempt and never dead-lettered.
//   - Failed attempts are counted per (group, key) in the ledger, so the
//     count survives the handler's rollback, a restart and a re-send of the
//     same message. Only the handler's failures count: a store failure
//     marked dedup.ErrUnavailable or dedup.ErrConflict (the database is
//     down, a deadlock outlasted the store's retries) is neither recorded
//     nor buried, and is returned for the transport to retry (the RocketMQ
//     consumer retries it in place behind a consumer-wide pause).
//   - A message that fails with idemq.Permanent, or at attempt
//     DeadLetterConfig.MaxAttempts or later, is stored as a dead letter
//     with its whole message and error history, its key is marked dead so
//     that redeliveries are duplicates, and the delivery is acknowledged.
//     If the dead letter cannot be stored the delivery is retried instead:
//     a message is never acknowledged without being processed, found a
//     duplicate, or buried.
//   - One message is buried once, however many of its copies fail at the
//     same moment and whatever its key looks like: the ledger's Bury is
//     idempotent per message (its key, and its message ID or body), and a
//     message whose group or key is unusable is buried under a name
//     derived from a SHA-256 of its contents. Different messages that a
//     key mapping bug gives one key are each buried.
//   - Every message ends processed or buried: a hostile message ID is
//     stored cleaned beside a usable key, and what the ledger cannot store
//     whole (a body over 1 MiB, NUL or invalid UTF-8 in text) it stores in
//     part, marked truncated, with the reason saying so.
//   - Standard refuses a store whose retention does not outlast the retry
//     policy's horizon (RetryPolicy.Horizon) plus its redrive window.
//   - Every handler run has a deadline (DefaultTimeout, 30s, unless
//     StandardConfig.Timeout says otherwise), so a hung handler cannot hold
//     its database transaction forever; its failure is an ordinary failed
//     attempt.
//   - A duplicate whose payload differs from the one first processed under
//     its key is, by default, dead-lettered for an operator rather than
//     silently acknowledged.
//
// # What it does not guarantee
//
//   - It does not make the broker deliver exactly once, and it cannot undo
//     an external side effect. In lease mode an external effect can repeat
//     if the process dies after the effect and before the key is marked
//     done; pass msg.ID to the external API as its idempotency key.
//   - A message the transport never delivers again (for example one the
//     broker moved to its own dead-letter queue because MaxAttempts is
//     above the broker's retry limit) is not seen by DeadLetter.
//   - Timeout only cancels the handler's context; a handler that ignores
//     its context runs on (and is reported at half its timeout). The
//     error of a handler that failed after it names the timeout ("handler
//     timed out after 30s") and matches context.DeadlineExceeded.
//   - Attempts does not count deliveries interrupted by the consumer's
//     shutdown, and its count is raised only on failure: the first
//     delivery after a re-send starts from the transport's attempt number.
//
// The middlewares of one delivery share a small state through the context
// (Dedup's decision, Attempts' record, DeadLetter's burial); it is created
// by the outermost middleware that reads it, so a middleware that reads it
// (DeadLetter, Logging, Metrics, Tracing) must sit outside the ones that
// write it (Dedup, Attempts, DeadLetter), as in Standard.
package middleware
