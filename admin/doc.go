// Package admin is the operator's API over idemq's tables: dead letters,
// attempts, dedup keys, the outbox, node leases, and an audit log of every
// operator action. The `idemq` command and the web console are built on it;
// a service can also call it from its own tools.
//
// It works on every database idemq supports (SQLite, PostgreSQL,
// MySQL/MariaDB) through SQL on the tables the library writes, under one
// table prefix. It needs no consumer, no producer and no node lease.
//
// What it guarantees:
//
//   - Redrive keeps the message ID. A redriven dead letter is published
//     again by a [Sender] (any function that publishes an idemq.Message
//     with its ID; see [ProducerSender]) after its key's dead mark and
//     attempts are cleared, so the consumer's dedup lets it through once.
//     A dead letter is claimed before it is published, so two operators
//     redriving at once publish it once; if publishing fails the claim is
//     undone and the dead letter stays for another try.
//   - Discard deletes dead letters (or failed outbox rows) and leaves the
//     key marked dead, so a late redelivery of a discarded message is still
//     skipped. What was discarded (IDs, message IDs, keys, reasons) is kept
//     in the audit record.
//   - Every mutating action writes one audit record (who, when, what, how
//     many) with the actor from [WithActor]. A dry run touches nothing and
//     writes no record; it reports the count the action would touch, which
//     is also what [Admin.CountDead] and [Admin.CountOutbox] return.
//   - Bulk actions select by a filter, and an empty filter selects nothing:
//     acting on everything takes an explicit All.
//
// Times in results are UTC instants; callers show them in the operator's
// zone. Listing times come from the database clock where the tables store
// them (dead letters, attempts, dedup rows: Unix milliseconds; outbox:
// timestamps).
package admin
