// Package consumer turns an idemq.Handler and its middleware into a
// RocketMQ push consumer (github.com/apache/rocketmq-client-go/v2, pinned
// to v2.1.3-0.20251226070945-2173d070fd1b, the 2025-12-26 master; see the
// README for why), in clustering mode, concurrent or orderly.
//
//	c, err := consumer.New(consumer.Config{
//		NameServers:   []string{"rocketmq-ns:9876"},
//		Group:         "rewards",
//		Subscriptions: []consumer.Subscription{{Topic: "orders", Tags: "paid"}},
//		Store:         store, // a sqldedup.Store: dedup, attempts and dead letters
//		Handler:       grantRedPacket,
//	})
//	if err != nil { ... }
//	if err := c.Start(ctx); err != nil { ... }
//	defer c.Shutdown(ctx)
//
// # Safe by default
//
// The short call above is the safe one; every unsafe variant is a named
// choice:
//
//   - New requires a Store, and runs the handler in middleware.Standard
//     built from it (dedup, durable attempts, dead letters, panics
//     recovered). Running without dedup takes Config.WithoutDedup (every
//     redelivery runs the handler again); a chain of one's own takes
//     Config.CustomChain.
//   - Every handler run has a timeout, 30 seconds unless Config.Timeout
//     says otherwise, well below the client's own consume timeout of 15
//     minutes: the error says "handler timed out after 30s" and the
//     message is retried; a handler still running at half of it is
//     logged with its message. Stats.InFlight (and the in_flight gauge)
//     show the handlers running.
//   - Start checks the store before it starts the client: missing or
//     outdated tables fail Start with "run Migrate (or idemq migrate)" and
//     the table or step named, a Redis that does not answer PING (the fast
//     path's, or a Redis store) fails it with the address and the cause.
//   - From Start to Shutdown the consumer runs the store's retention (a
//     sqldedup Janitor: done keys, attempts and redriven dead letters past
//     Retention.Keep), unless Config.NoRetention leaves it to another
//     process. sqldedup.New already refuses a retention shorter than the
//     retry horizon plus the redrive window.
//   - With Config.Registerer every metric is registered once: the chain's,
//     the fast path's and the janitor's.
//   - A message without the idemq ID property (sent by a producer that is
//     not idemq's) is deduplicated on RocketMQ's MsgId, which a re-send
//     changes: such messages are counted (Stats.WithoutID, the
//     messages_without_id_total metric) and the first of each topic is
//     logged at Warn level. Give them a business key with
//     Config.Dedup.KeyFunc.
//
// Every delivered message is converted with ToMessage (ID from the
// idemq.PropertyMessageID property, Attempt = ReconsumeTimes+1, user
// properties only) and run through the chain on its own. The chain's
// result decides the delivery, exactly:
//
//   - nil (processed, duplicate or dead-lettered by the DeadLetter
//     middleware): ConsumeSuccess, the message is acknowledged;
//   - a retryable error: ConsumeRetryLater, returned explicitly (the client
//     ignores a callback's error, and "ConsumeSuccess, err" would
//     acknowledge), with DelayLevelWhenNextConsume set from
//     Config.RetryPolicy at the message's attempt, rounded up to a RocketMQ
//     delay level; an idemq.RetryAfter delay is honoured as a floor. In
//     orderly mode: SuspendCurrentQueueAMoment, with the queue paused for
//     that delay held within [SuspendInterval, MaxSuspendInterval];
//   - an idemq.Permanent error that reached the consumer, which happens
//     only when no DeadLetter middleware is in the chain (with one, it was
//     buried and the chain returned nil): there is no dead-letter
//     destination, and acknowledging would drop the message, so it is
//     retried like any failure, logged at Error level with the message's
//     ID, key and topic and counted in Stats.Unburied, until the broker's
//     %DLQ% takes it after MaxAttempts. The Standard chain the consumer
//     builds from Store has it;
//   - an infrastructure failure (dedup.IsInfrastructure: the store was
//     unreachable, or gave up on a deadlock or serialization failure): not
//     the message's fault, so it is not handed back to the broker, which
//     would count an attempt. The delivery is retried in place after a
//     pause shared by the whole consumer, 100ms doubling to 10s and reset
//     by any success, so a database outage pauses consumption instead of
//     burning every message's attempts (counted in Stats.OutageRetries).
//     If Shutdown begins during the pause, the delivery is handed back.
//     Limit: in concurrent mode rocketmq-client-go (pinned version) sends a message
//     that has been in its callback longer than its consume timeout (15
//     minutes) back to the broker itself, so an outage longer than that
//     costs one broker-side attempt per 15 minutes;
//   - a panic anywhere in the chain or in the consumer's own code:
//     recovered and retried, counted in Stats.Panics. (An orderly-mode
//     panic in the client's callback would kill the process.)
//
// # What the consumer guarantees
//
//   - A message is acknowledged only when the chain returned nil; every
//     other outcome, permanent errors without a dead-letter destination,
//     panics and handlers cut short by Shutdown included, leads to a
//     redelivery (infrastructure failures: a retry in place). With the Standard chain
//     that means a message is acknowledged only once it was processed,
//     found a duplicate, or buried as a dead letter.
//   - In a batch (BatchSize > 1) each message has its own dedup; if one
//     fails the whole batch is redelivered (the client keeps one result
//     per batch), and its other messages come back as duplicates that
//     dedup acknowledges without running the handler. In orderly mode the
//     batch stops at the first failure, so no later message overtakes it.
//   - Orderly mode keeps the order of each queue through retries: a failed
//     message is redelivered in place after a real pause, and Attempt
//     grows with each try, so the DeadLetter middleware's MaxAttempts ends
//     a poison message instead of blocking its queue forever. Attempt
//     counted by the client is lost on restart or rebalance; the Attempts
//     middleware keeps the durable count in the ledger.
//   - The broker's MaxReconsumeTimes is Config.MaxAttempts, so its own
//     dead-letter queue (%DLQ%<group>) is reached only after the
//     DeadLetter middleware had its chance (when its MaxAttempts is not
//     above the consumer's): it is a backstop for a dead letter that could
//     not be stored.
//   - Shutdown stops pulling, waits for handlers in flight up to its
//     deadline, then shuts the client down (persisting offsets). Callbacks
//     that arrive once Shutdown began run no handler and are handed back
//     without counting an attempt (see Consumer.Shutdown).
//
// # What it does not guarantee
//
//   - It does not make RocketMQ deliver exactly once: redeliveries and
//     duplicates after a rebalance or restart are normal, and only the
//     dedup middleware makes their effects happen once.
//   - A retry relies on the client's send-back to the broker. When the
//     broker refuses the send-back or it fails in transport (after a fixed
//     3 s), the client sends the message into %RETRY%<group> itself, and
//     that fallback ignores the delay idemq asked for: the retry comes
//     after RocketMQ's level 3+ReconsumeTimes (10 s after the first
//     delivery, then 30 s, 1m, 2m, 3m ... 2h from the 16th), and a
//     message already at the group's max reconsume times goes to the
//     broker's %DLQ%<group>. Only if that send fails too is the message
//     re-consumed locally 5 s later. (v2.1.2 acknowledged a refused
//     send-back and lost the message, upstream issue 1106.)
//   - A new group starts at Config.StartFrom, by default the last offset:
//     it does not see messages stored before its first rebalance.
//   - Acknowledged offsets reach the broker periodically and at Shutdown:
//     after a crash (or a result that lands just as Shutdown persists the
//     offsets) messages already acknowledged are delivered again. They are
//     duplicates, which dedup acknowledges without running the handler.
//   - The delay before a concurrent-mode retry is one of RocketMQ's 18
//     levels (1s 5s 10s 30s 1m ... 2h), never finer.
//   - A handler that ignores its context runs on after Shutdown's deadline;
//     its result is then ignored and its message redelivered.
//   - rocketmq-client-go still has data races of its own in orderly mode
//     (processQueue.takeMessages) and between Shutdown and the requests
//     in flight (an unguarded close flag): a process that runs them under
//     the race detector may report them. Concurrent mode is otherwise
//     clean.
//   - The client recovers and swallows panics in its own goroutines; the
//     consumer recovers every panic in its callback itself, so none is
//     lost silently.
package consumer
