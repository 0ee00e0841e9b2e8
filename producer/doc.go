// Package producer sends idemq messages to Apache RocketMQ (through
// github.com/apache/rocketmq-client-go/v2) with a message ID that survives
// every re-send.
//
// # Message IDs
//
// Every message gets an ID from Config.IDSource (a *msgid.Generator; see
// package msgid for the IDs and the node leases they rest on) before its
// first send. [Producer.Stamp] writes it to msg.ID, to the property
// idemq.PropertyMessageID and to the RocketMQ Keys, so operators can query
// by it. A message that already has an ID keeps it: re-sending the same
// *idemq.Message, an outbox relay re-sending a row, or a redrive of a dead
// letter all carry the same ID, and consumers deduplicate by it.
// RocketMQ's own MsgId (UNIQ_KEY) is new for each send and is not used as
// the identity.
//
// # Sending
//
// A [Producer] has the lifecycle of every long-lived idemq value: [New]
// checks the configuration and touches no network, [Producer.Start]
// connects (idempotent; after Shutdown it returns [ErrClosed]), and
// [Producer.Shutdown] waits for the sends in flight, up to its context,
// and stops the client (idempotent). Sends before Start return
// [ErrNotStarted]. Sends: [Producer.SendSync] (waits for
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
// Each attempt of a send is bounded by Config.AttemptTimeout (the client's
// per-attempt WithSendMsgTimeout, 3 s by default), the whole send by
// Config.SendTimeout (10 s): an attempt the broker never answers is
// abandoned and retried (Config.Retries) while time is left. Start fails
// with "no name server answers" when none does. A send that fails with the
// client's "route info not found" says instead which it is: no name server
// answers, or the topic does not exist (create topics first, with package
// topics or mqadmin updateTopic).
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
// prefix matching ^[a-z][a-z0-9_]{0,30}$. The client library's
// logs go to log/slog (slog.Default(), or the logger given to
// [SetClientLogger]), with its many Info lines at Debug:
// [SetClientInfoLevel](slog.LevelInfo) brings them back.
package producer
