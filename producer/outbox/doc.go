// Package outbox is a transactional outbox with a relay: messages are
// written into an outbox table inside the caller's own business
// transaction, and relays send them to the broker afterwards.
//
// # Flow
//
//	err := db.Transaction(func(tx *gorm.DB) error {
//		if err := tx.Create(&order).Error; err != nil {
//			return err
//		}
//		return ob.Enqueue(tx, &idemq.Message{Topic: "orders", Body: body})
//	})
//	// optional, for low latency: relay.SendNow(ctx, msg.ID) or relay.Notify()
//
// Enqueue stamps a snowflake message ID on the message (from Config.IDSource)
// unless it has one. The ID is unique in the table, is carried in the
// idemq.PropertyMessageID property of every send, and survives every
// re-send and redrive, so consumers deduplicate on it.
//
// # Relays
//
// A [Relay] has the lifecycle of every long-lived idemq value: [NewRelay]
// checks its configuration and touches nothing, [Relay.Start] checks that
// the table exists and starts the relay's loop (idempotent; after Shutdown
// it returns [ErrClosed]), [Relay.Shutdown] stops the loop, releasing the
// rows it claimed and has not sent, and waits for it up to its context
// (idempotent). A relay is observed, like every part of idemq, through a
// snapshot ([Relay.Stats]), Prometheus counters ([Relay.RegisterMetrics])
// and its slog logs (Config.Logger).
//
// # States
//
// A row is pending (0), sent (1) or failed (2). A pending row may be
// claimed: a relay has set claimed_by to its claim token and claim_until
// to a visibility deadline (now + Visibility), during which no other relay
// takes it. The relay sends it synchronously and then
//
//   - on the broker's confirmation marks it sent, with the broker's message
//     ID and sent_at. Confirmed rows are marked as they come, by a second
//     goroutine, while the relay sends the next rows; rows confirmed while
//     a mark is under way are marked together in the next statement;
//   - on a retryable error increments attempts, records last_error and sets
//     next_attempt_at to now + an exponential, capped, jittered backoff, and
//     releases the claim;
//   - on a permanent error (the Sender returned an idemq.Permanent error, or
//     the row cannot be sent: body larger than MaxBodySize, no topic,
//     corrupt columns), or once attempts reach MaxAttempts, marks it
//     failed. Failed rows stay until an operator redrives them (Redrive),
//     which makes them pending with attempts 0 and the same message ID.
//
// While it sends a batch, the relay extends the claim of the rows it still
// holds (unsent, in flight, or confirmed and not yet marked) every
// Visibility/3, and before each send it checks that the claim, counted
// from when the claiming or extending statement was sent, outlasts
// SendTimeout; if not (the database stopped answering), it releases the
// rest of the batch. Every mark is owner-checked: it applies only while the
// row is still claimed by the same claim token. Sent rows are deleted after a retention
// period in small batches. All due, deadline and retention comparisons use
// the database clock, so relays on hosts with skewed clocks agree.
//
// # Guarantees
//
//   - Nothing is sent for a transaction that rolled back; a committed row is
//     sent at least once, until it is sent or failed.
//   - A relay that dies after claiming (before or after sending) leaves rows
//     that become due again when their deadline passes; they are re-sent
//     with the same message ID, and consumers' dedup absorbs the duplicate.
//   - A live relay's batch is never claimed by another relay, however long
//     its sends take (a client that ignores the send timeout included): the
//     claim is extended while the batch is being sent.
//   - Several relays, and SendNow, may run at once against one table. They
//     claim with SELECT ... FOR UPDATE SKIP LOCKED (PostgreSQL, MariaDB
//     10.6+, MySQL 8+) or a single UPDATE ... RETURNING under SQLite's single
//     writer, so in the normal case no row is claimed or sent by two of
//     them.
//   - A failing row never blocks the rows behind it (except its own sharding
//     key in ordered mode).
//   - Ordered mode (Config.Ordered): rows with the same sharding key
//     (PropertyShardingKey) are sent strictly in id order; a row is not
//     claimed while an earlier row of its key is pending, claimed or not.
//
// # Limits
//
//   - Delivery is at least once, never exactly once: a relay that dies (or
//     whose process stalls past its deadline, so that it can neither send
//     nor extend) between the broker's confirmation and the mark causes
//     duplicate sends with the same message IDs: the row in flight and the
//     confirmed rows whose mark had not committed. Consumers must
//     deduplicate (package dedup). Marks run beside the sends, so they do
//     not slow a relay down.
//   - Ordered mode costs throughput: one row per sharding key is in flight
//     at a time (one claim, send and mark round trip per row of a key), the
//     claim query checks for an earlier pending row of the key, and a
//     retrying row holds back the rest of its key until it is sent or
//     failed. A failed row no longer holds its key back, so the rows after
//     it go out first and a redrive sends it out of order. The order is the
//     id order, that is the insert order; two transactions that enqueue
//     for the same key concurrently may commit out of id order, so
//     serialize them (for example by locking the aggregate's row) if their
//     order matters.
//   - A relay keeps up to RelayConfig.SendWindow sends in flight (8 by
//     default), taking the rows in id order, and marks confirmed rows
//     beside them, several per statement: a confirmed row waits for its
//     mark until 64 rows wait, 5ms passed or its batch's last send
//     finished, so a relay that dies may leave the rows of its last few
//     milliseconds to be sent again (same message IDs, absorbed by the
//     consumers' dedup) after the deadline; the broker's confirmation latency
//     divided by the window bounds one relay's rate. A started relay's
//     window spans batches: once every row of a batch was started it goes
//     on with the next batch while the last sends are in flight, and after
//     a full batch it claims the next one while the current one is being
//     started, so the window does not drain between batches (RunOnce and
//     SendNow still send one batch and return when it is done). A batch
//     claimed ahead is held like any other: its claim counts from its own
//     statement, and on Shutdown it is released unsent. Without ordered mode,
//     rows of one batch may reach the broker out of id order (no order is
//     promised there); ordered mode claims one row per sharding key at a
//     time, so a window never reorders a key. When the batch must stop (its
//     claim could no longer outlast a send, or Shutdown), the sends in
//     flight finish and the rows not started are released.
//   - MySQL DSNs need parseTime=true; timestamps are stored as UTC.
package outbox
