// Package idemq is the vocabulary of an idempotent-messaging framework for
// Apache RocketMQ: a transport-neutral [Message], the [Handler] that consumes
// it, [Middleware] that wraps handlers, and the control-flow errors
// [Permanent] and [RetryAfter].
//
// Message queues deliver at least once. idemq makes the effects of a handler
// happen once:
//
//   - package dedup decides "first time or duplicate" for a (consumer group,
//     key) pair, either inside the handler's own database transaction
//     (transactional mode: the handler's database effects happen exactly
//     once) or with an owner-fenced lease for effects outside the database
//     (lease mode: at most once per successful run, with the honest limit
//     that an external effect can repeat if a process dies after the effect
//     and before the key is marked done);
//   - package middleware builds the chain around a handler: recover, dedup,
//     attempts, dead letters, timeout, logging, metrics and tracing;
//   - package consumer turns a handler into a RocketMQ push consumer, and
//     package producer stamps every message with a snowflake ID that
//     survives every re-send.
//
// idemq does not make a broker deliver exactly once, and it cannot undo an
// external side effect: it gives the handler the message ID so that an
// external API can use it as its own idempotency key.
package idemq
