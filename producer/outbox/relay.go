package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/backoff"
	"github.com/idemq/idemq/internal/token"
)

// Sender sends one message synchronously and returns the broker's message
// ID once the broker confirmed it. An error wrapped with idemq.Permanent
// is not retried: the row goes to failed at once. The producer's
// *producer.Producer satisfies Sender.
type Sender interface {
	Send(ctx context.Context, msg *idemq.Message) (string, error)
}

// RouteSender is a Sender that can also route by sharding key and delay by
// level without reading them from the message properties (the producer
// reserves RocketMQ's own property names). When the relay's Sender
// implements it, a row with a sharding key or a delay level is sent through
// SendRoute, and PropertyShardingKey and PropertyDelayLevel are removed
// from the message's properties. Otherwise they stay in the properties.
type RouteSender interface {
	Sender
	SendRoute(ctx context.Context, msg *idemq.Message, shardingKey string, delayLevel int) (string, error)
}

// SenderFunc adapts a function to a Sender.
type SenderFunc func(ctx context.Context, msg *idemq.Message) (string, error)

// Send calls f(ctx, msg).
func (f SenderFunc) Send(ctx context.Context, msg *idemq.Message) (string, error) { return f(ctx, msg) }

// Backoff is the exponential backoff between failed sends of one row.
type Backoff struct {
	// Initial is the delay after the first failure. Defaults to 1 second.
	Initial time.Duration
	// Max caps the delay. Defaults to 5 minutes.
	Max time.Duration
	// Multiplier grows the delay after each failure. Defaults to 2.
	Multiplier float64
	// Jitter spreads each delay uniformly by ±Jitter of itself, so rows
	// that failed together do not retry together. 0 <= Jitter < 1.
	// Defaults to 0.2; set a negative value for none.
	Jitter float64
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial == 0 {
		b.Initial = time.Second
	}
	if b.Max == 0 {
		b.Max = 5 * time.Minute
	}
	if b.Multiplier == 0 {
		b.Multiplier = 2
	}
	if b.Jitter == 0 {
		b.Jitter = 0.2
	}
	if b.Jitter < 0 {
		b.Jitter = 0
	}
	return b
}

func (b Backoff) validate() error {
	switch {
	case b.Initial < 0 || b.Max < 0:
		return errors.New("outbox: negative backoff")
	case b.Max < b.Initial:
		return fmt.Errorf("outbox: backoff Max %s is below Initial %s", b.Max, b.Initial)
	case b.Multiplier < 1:
		return fmt.Errorf("outbox: backoff Multiplier %g is below 1", b.Multiplier)
	case b.Jitter >= 1:
		return fmt.Errorf("outbox: backoff Jitter %g is not below 1", b.Jitter)
	}
	return nil
}

// Delay returns the delay after the given number of failed attempts
// (1-based): Initial*Multiplier^(attempts-1), capped at Max, then jittered.
// r returns a uniform number in [0, 1).
func (b Backoff) Delay(attempts int, r func() float64) time.Duration {
	return backoff.Exponential{
		Initial:    b.Initial,
		Max:        b.Max,
		Multiplier: b.Multiplier,
		Jitter:     b.Jitter,
	}.Delay(attempts, r)
}

// Hooks observe a relay, for metrics and tests. Every field is optional;
// hooks must be quick. Claimed and Failed run on the goroutine that called
// Run, RunOnce or SendNow; Sent and LostClaim run on the goroutine that
// marks the batch's confirmed rows, which may be concurrent with them.
type Hooks struct {
	// Claimed is called after the relay claimed rows, with their message
	// IDs, before it sends them.
	Claimed func(relayID string, messageIDs []string)
	// Sent is called after a row was confirmed and marked sent.
	Sent func(relayID, messageID, brokerMessageID string)
	// Failed is called after a failed send was recorded. attempts is the
	// row's new attempt count; final is set when the row is now failed.
	Failed func(relayID, messageID string, err error, attempts int, final bool)
	// LostClaim is called when a row was sent but the relay no longer held
	// its claim (its deadline passed and another relay claimed it), so the
	// row was not marked by this relay.
	LostClaim func(relayID, messageID string)
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	// ID names the relay in claimed_by and logs. It must be unique among
	// running relays. Defaults to "<hostname>-<pid>-<random>".
	ID string
	// BatchSize is the most rows claimed at once. Defaults to 100.
	BatchSize int
	// PollInterval is the pause after a claim that found less than a full
	// batch. Defaults to 1 second.
	PollInterval time.Duration
	// Visibility is how long a claim keeps a row from other relays. While
	// a relay sends a batch it extends the claim of the rows it still
	// holds every Visibility/3, and it starts a send only if the claim, as
	// far as it knows (counted from when the claiming or extending
	// statement was sent), outlasts SendTimeout; otherwise it releases the
	// rest of the batch. Rows of a relay that died become due again once
	// the deadline passes. Must exceed SendTimeout. Defaults to 1 minute.
	Visibility time.Duration
	// SendTimeout bounds one Send. Defaults to 15 seconds.
	SendTimeout time.Duration
	// MaxAttempts is the number of failed sends after which a row is
	// failed. Defaults to 20 (about an hour with the default backoff).
	MaxAttempts int
	// Backoff spaces the retries of a row.
	Backoff Backoff
	// Retention is how long sent rows are kept before Run deletes them;
	// negative keeps them forever. Defaults to 7 days.
	Retention time.Duration
	// CleanupInterval is how often Run deletes expired sent rows. Defaults
	// to 10 minutes.
	CleanupInterval time.Duration
	// CleanupBatch is the most rows one cleanup statement deletes. Defaults
	// to 1000.
	CleanupBatch int
	// Hooks observe the relay.
	Hooks Hooks
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), token.Short(3))
		if len(c.ID) > maxRelayIDLen {
			c.ID = c.ID[len(c.ID)-maxRelayIDLen:]
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.Visibility == 0 {
		c.Visibility = time.Minute
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 15 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = 10 * time.Minute
	}
	if c.CleanupBatch == 0 {
		c.CleanupBatch = 1000
	}
	c.Backoff = c.Backoff.withDefaults()
	return c
}

const maxRelayIDLen = 160

func (c RelayConfig) validate() error {
	switch {
	case len(c.ID) > maxRelayIDLen:
		return fmt.Errorf("outbox: relay ID longer than %d bytes", maxRelayIDLen)
	case c.BatchSize < 1:
		return fmt.Errorf("outbox: BatchSize %d is below 1", c.BatchSize)
	case c.PollInterval < 0:
		return errors.New("outbox: negative PollInterval")
	case c.SendTimeout < 0:
		return errors.New("outbox: negative SendTimeout")
	case c.Visibility <= c.SendTimeout:
		return fmt.Errorf("outbox: Visibility %s must exceed SendTimeout %s", c.Visibility, c.SendTimeout)
	case c.MaxAttempts < 1:
		return fmt.Errorf("outbox: MaxAttempts %d is below 1", c.MaxAttempts)
	case c.CleanupInterval < 0:
		return errors.New("outbox: negative CleanupInterval")
	case c.CleanupBatch < 1:
		return fmt.Errorf("outbox: CleanupBatch %d is below 1", c.CleanupBatch)
	}
	return c.Backoff.validate()
}

// RelayStats are a relay's counters since it was created.
type RelayStats struct {
	// Claimed counts rows claimed.
	Claimed int64
	// Sent counts rows confirmed by the broker and marked sent.
	Sent int64
	// Failures counts failed sends (retryable or not).
	Failures int64
	// Failed counts rows moved to failed (permanent error or attempts
	// exhausted).
	Failed int64
	// LostClaims counts rows sent after another relay took over the claim.
	LostClaims int64
	// Released counts claimed rows handed back unsent (shutdown, or the
	// visibility deadline drawing near).
	Released int64
}

// Relay moves rows from the outbox to the broker. Several relays may run
// against one outbox at once, in one process or many.
type Relay struct {
	ob     *Outbox
	sender Sender
	cfg    RelayConfig
	wake   chan struct{}
	seq    atomic.Int64

	claimed, sent, failures, failed, lost, released atomic.Int64

	// skipMark, when set by tests, is asked after a successful send;
	// returning true leaves the row unmarked, as if the relay died
	// between send and mark.
	skipMark func(messageID string) bool
}

// NewRelay returns a relay that sends ob's rows through sender.
func NewRelay(ob *Outbox, sender Sender, cfg RelayConfig) (*Relay, error) {
	if ob == nil {
		return nil, errors.New("outbox: nil outbox")
	}
	if sender == nil {
		return nil, errors.New("outbox: nil sender")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Relay{ob: ob, sender: sender, cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// ID returns the relay's ID.
func (r *Relay) ID() string { return r.cfg.ID }

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Claimed:    r.claimed.Load(),
		Sent:       r.sent.Load(),
		Failures:   r.failures.Load(),
		Failed:     r.failed.Load(),
		LostClaims: r.lost.Load(),
		Released:   r.released.Load(),
	}
}

// Notify wakes a running Run loop so that it claims at once instead of
// waiting for its poll interval. Call it after committing a transaction
// that enqueued messages. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run claims and sends due rows until ctx is done, then releases what it
// claimed and has not sent, and returns nil. Database errors are logged
// and retried after the poll interval. Run also deletes sent rows older
// than Retention every CleanupInterval.
func (r *Relay) Run(ctx context.Context) error {
	var lastCleanup time.Time
	errDelay := r.cfg.PollInterval
	for {
		if ctx.Err() != nil {
			return nil
		}
		n, err := r.RunOnce(ctx)
		wait := r.cfg.PollInterval
		switch {
		case err != nil && ctx.Err() == nil:
			r.ob.log.Error("outbox relay: claim failed", "relay", r.cfg.ID, "err", err)
			wait = errDelay
			errDelay = min(2*errDelay+time.Millisecond, 30*time.Second)
		case err == nil:
			errDelay = r.cfg.PollInterval
			if n >= r.cfg.BatchSize {
				wait = 0
			}
		}
		if r.cfg.Retention > 0 && time.Since(lastCleanup) >= r.cfg.CleanupInterval && ctx.Err() == nil {
			lastCleanup = time.Now()
			if _, err := r.ob.Cleanup(ctx, r.cfg.Retention, r.cfg.CleanupBatch); err != nil && ctx.Err() == nil {
				r.ob.log.Error("outbox relay: cleanup failed", "relay", r.cfg.ID, "err", err)
			}
		}
		if wait == 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// RunOnce claims one batch of due rows, sends each, and records the
// outcomes. It returns the number of rows claimed. Send failures are
// recorded on the rows, not returned; the error is a database error.
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	c, err := r.claim(ctx, nil)
	if err != nil {
		return 0, err
	}
	r.process(ctx, c)
	return len(c.rows), nil
}

// SendNow claims the rows with the given message IDs, if they are due and
// no relay holds them, and sends them at once; it returns how many were
// sent. Call it after the enqueuing transaction committed, for low
// latency; rows it skips or fails to send are left to the relays, as
// usual. It claims like a relay, so a row is never sent by both in the
// normal case.
func (r *Relay) SendNow(ctx context.Context, messageIDs ...string) (int, error) {
	if len(messageIDs) == 0 {
		return 0, nil
	}
	c, err := r.claim(ctx, messageIDs)
	if err != nil {
		return 0, err
	}
	return r.process(ctx, c), nil
}

// claimed is the result of one claim: its rows, its token, and when the
// claiming statement was sent.
type claimed struct {
	rows  []sendRow
	token string
	// sentAt is read before the claiming statement is sent: the database
	// set the deadline to its own now + Visibility no earlier than that,
	// so sentAt + Visibility is a deadline the claim is sure to outlast
	// (clock rates aside).
	sentAt time.Time
}

// claim marks up to BatchSize due rows (or only the named ones) as claimed
// by a new claim token until now + Visibility, by the database clock.
func (r *Relay) claim(ctx context.Context, messageIDs []string) (claimed, error) {
	ob := r.ob
	token := fmt.Sprintf("%s#%d", r.cfg.ID, r.seq.Add(1))
	sentAt := time.Now()
	now := ob.d.now()
	until, untilArg := ob.d.plus(r.cfg.Visibility)
	limit := r.cfg.BatchSize
	if len(messageIDs) > 0 {
		limit = len(messageIDs)
	}

	where := "o.status = 0 AND o.next_attempt_at <= " + now + " AND (o.claim_until IS NULL OR o.claim_until <= " + now + ")"
	var whereArgs []any
	if len(messageIDs) > 0 {
		where += " AND o.message_id IN ?"
		whereArgs = append(whereArgs, messageIDs)
	}
	if ob.ordered {
		// A row with a sharding key waits for every earlier row of its key
		// that is still pending (claimed or not): at most one row per key
		// is in flight, and rows go out in id order. The redundant
		// "p.sharding_key <> ''" lets the planner use the partial index.
		where += " AND (o.sharding_key = '' OR NOT EXISTS (SELECT 1 FROM " + ob.table +
			" p WHERE p.sharding_key = o.sharding_key AND p.sharding_key <> '' AND p.status = 0 AND p.id < o.id))"
	}
	pick := "SELECT o.id FROM " + ob.table + " o WHERE " + where + " ORDER BY o.next_attempt_at, o.id LIMIT ?"
	pickArgs := append(whereArgs, limit)

	var rows []sendRow
	db := ob.db.WithContext(ctx)
	switch ob.d.name {
	case DialectPostgres:
		// One statement, one short transaction: lock due rows, skipping
		// rows another relay is claiming, and stamp the claim.
		ret := "t." + strings.ReplaceAll(sendColumns, ", ", ", t.")
		q := "WITH c AS (" + pick + " FOR UPDATE SKIP LOCKED) UPDATE " + ob.table +
			" t SET claimed_by = ?, claim_until = " + until + ", updated_at = " + now +
			" FROM c WHERE t.id = c.id RETURNING " + ret
		args := append(pickArgs, token, untilArg)
		if err := db.Raw(q, args...).Scan(&rows).Error; err != nil {
			return claimed{}, fmt.Errorf("outbox: claim: %w", err)
		}
	case DialectMySQL:
		// MySQL has no UPDATE ... RETURNING: lock with SKIP LOCKED in a short
		// READ COMMITTED transaction (no gap locks to block Enqueue), stamp
		// the claim, commit.
		err := db.Transaction(func(tx *gorm.DB) error {
			q := "SELECT " + "o." + strings.ReplaceAll(sendColumns, ", ", ", o.") + " FROM " + ob.table + " o WHERE " + where +
				" ORDER BY o.next_attempt_at, o.id LIMIT ? FOR UPDATE SKIP LOCKED"
			if err := tx.Raw(q, pickArgs...).Scan(&rows).Error; err != nil {
				return err
			}
			if len(rows) == 0 {
				return nil
			}
			ids := make([]int64, len(rows))
			for i := range rows {
				ids[i] = rows[i].ID
			}
			return tx.Exec("UPDATE "+ob.table+" SET claimed_by = ?, claim_until = "+until+", updated_at = "+now+" WHERE id IN ?",
				token, untilArg, ids).Error
		}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			return claimed{}, fmt.Errorf("outbox: claim: %w", err)
		}
	default:
		// SQLite has one writer at a time: a single UPDATE ... RETURNING
		// picks and claims atomically.
		q := "UPDATE " + ob.table + " SET claimed_by = ?, claim_until = " + until + ", updated_at = " + now +
			" WHERE id IN (" + pick + ") RETURNING " + sendColumns
		args := append([]any{token, untilArg}, pickArgs...)
		if err := db.Raw(q, args...).Scan(&rows).Error; err != nil {
			return claimed{}, fmt.Errorf("outbox: claim: %w", err)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	if len(rows) > 0 {
		r.claimed.Add(int64(len(rows)))
		if h := r.cfg.Hooks.Claimed; h != nil {
			ids := make([]string, len(rows))
			for i := range rows {
				ids[i] = rows[i].MessageID
			}
			h(r.cfg.ID, ids)
		}
	}
	return claimed{rows: rows, token: token, sentAt: sentAt}, nil
}

// process sends claimed rows in order and records each outcome. While it
// sends, a second goroutine (the batch's tender) marks confirmed rows as
// they come, several in one statement when they come faster than a mark
// takes, and extends the claim of the rows still held every Visibility/3,
// so a live relay's slow batch never becomes due to another relay. A relay
// that dies leaves its unmarked rows to be re-sent after the deadline, with
// the same message IDs. process stops early, releasing the rest, when ctx
// is done or the claim as last confirmed would not outlast the next send.
// It returns the number of rows the broker confirmed.
func (r *Relay) process(ctx context.Context, c claimed) int {
	if len(c.rows) == 0 {
		return 0
	}
	b := newBatch(r, c)
	finished := make(chan struct{})
	tended := make(chan struct{})
	go func() {
		defer close(tended)
		b.tend(ctx, finished)
	}()
	confirmed := 0
	for i := range c.rows {
		row := &c.rows[i]
		if ctx.Err() != nil || !b.outlasts(r.cfg.SendTimeout) {
			b.forget(c.rows[i:]...)
			r.release(ctx, c.rows[i:], c.token)
			break
		}
		id, ok := r.handle(ctx, row, c.token)
		if !ok {
			// handle recorded the failure or released the row.
			b.forget(*row)
			continue
		}
		confirmed++
		if r.skipMark != nil && r.skipMark(row.MessageID) {
			b.forget(*row) // a test's relay "dying" between send and mark
			continue
		}
		b.confirm(sentRow{row: row, brokerID: id})
	}
	close(finished)
	<-tended
	return confirmed
}

// batch is the state one claim shares between the sending goroutine and
// its tender.
type batch struct {
	r     *Relay
	token string

	mu        sync.Mutex
	deadline  time.Time      // the claim lasts at least until then
	held      map[int64]bool // rows neither marked, failed nor released
	confirmed []sentRow      // rows waiting for their mark
	kick      chan struct{}  // a row was confirmed
}

func newBatch(r *Relay, c claimed) *batch {
	b := &batch{
		r:        r,
		token:    c.token,
		deadline: c.sentAt.Add(r.cfg.Visibility),
		held:     make(map[int64]bool, len(c.rows)),
		kick:     make(chan struct{}, 1),
	}
	for i := range c.rows {
		b.held[c.rows[i].ID] = true
	}
	return b
}

// outlasts reports whether the claim is known to last longer than d from
// now.
func (b *batch) outlasts(d time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Until(b.deadline) > d
}

// forget stops extending the claim of rows.
func (b *batch) forget(rows ...sendRow) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range rows {
		delete(b.held, rows[i].ID)
	}
}

// confirm queues a confirmed row for its mark.
func (b *batch) confirm(s sentRow) {
	b.mu.Lock()
	b.confirmed = append(b.confirmed, s)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// tend marks confirmed rows as they come and extends the claim every
// Visibility/3, until finished is closed; then it marks what is left.
func (b *batch) tend(ctx context.Context, finished <-chan struct{}) {
	t := time.NewTicker(max(b.r.cfg.Visibility/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-b.kick:
			b.mark(ctx)
		case <-t.C:
			b.extend(ctx)
		case <-finished:
			b.mark(ctx)
			return
		}
	}
}

// mark records the confirmed rows waiting for it.
func (b *batch) mark(ctx context.Context) {
	b.mu.Lock()
	done := b.confirmed
	b.confirmed = nil
	b.mu.Unlock()
	if len(done) == 0 {
		return
	}
	b.r.markSent(ctx, done, b.token)
	// Marked or not, these rows are no longer extended: a failed mark
	// leaves them to be re-sent after the deadline, as documented.
	rows := make([]sendRow, len(done))
	for i := range done {
		rows[i] = *done[i].row
	}
	b.forget(rows...)
}

// extend moves the claim of the rows still held to now + Visibility (by
// the database clock) and, once the database confirmed it, the batch's
// deadline to when the statement was sent plus Visibility. Rows already
// marked, failed or released are not touched: the statement only matches
// rows still claimed by this token with a deadline.
func (b *batch) extend(ctx context.Context) {
	b.mu.Lock()
	ids := make([]int64, 0, len(b.held))
	for id := range b.held {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ob := b.r.ob
	until, untilArg := ob.d.plus(b.r.cfg.Visibility)
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.r.cfg.Visibility/3)
	defer cancel()
	sentAt := time.Now()
	err := ob.db.WithContext(mctx).Exec("UPDATE "+ob.table+" SET claim_until = "+until+", updated_at = "+ob.d.now()+
		" WHERE id IN ? AND claimed_by = ? AND status = 0 AND claim_until IS NOT NULL", untilArg, ids, b.token).Error
	if err != nil {
		ob.log.Warn("outbox relay: extending a claim failed; the batch stops before its deadline", "relay", b.r.cfg.ID, "rows", len(ids), "err", err)
		return
	}
	b.mu.Lock()
	if d := sentAt.Add(b.r.cfg.Visibility); d.After(b.deadline) {
		b.deadline = d
	}
	b.mu.Unlock()
}

// sentRow is a row the broker confirmed, waiting for its mark.
type sentRow struct {
	row      *sendRow
	brokerID string
}

// handle sends one claimed row, records a failure, and reports the
// broker's message ID and whether the row was sent.
func (r *Relay) handle(ctx context.Context, row *sendRow, token string) (string, bool) {
	msg, err := row.message()
	if err == nil && msg.Topic == "" {
		err = errors.New("empty topic")
	}
	if err == nil && len(msg.Body) > r.ob.maxBody {
		err = fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(msg.Body), r.ob.maxBody)
	}
	if err != nil {
		r.recordFailure(ctx, row, token, idemq.Permanent(fmt.Errorf("outbox: row %s cannot be sent: %w", row.MessageID, err)))
		return "", false
	}
	brokerID, err := r.send(ctx, msg, row.ShardingKey, row.DelayLevel)
	if err != nil {
		if ctx.Err() != nil && !idemq.IsPermanent(err) {
			// Shutting down: not the message's fault, hand it back.
			r.release(ctx, []sendRow{*row}, token)
			return "", false
		}
		r.recordFailure(ctx, row, token, err)
		return "", false
	}
	return brokerID, true
}

// send calls the sender with a timeout, turning a panic into an error.
func (r *Relay) send(ctx context.Context, msg *idemq.Message, shardingKey string, delayLevel int) (id string, err error) {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SendTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("outbox: sender panicked: %v", p)
		}
	}()
	if rs, ok := r.sender.(RouteSender); ok && (shardingKey != "" || delayLevel > 0) {
		delete(msg.Properties, PropertyShardingKey)
		delete(msg.Properties, PropertyDelayLevel)
		return rs.SendRoute(sctx, msg, shardingKey, delayLevel)
	}
	return r.sender.Send(sctx, msg)
}

// markCtx outlives the relay's context: a send that happened must be
// recorded even during shutdown, or the row would be sent again.
func markCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// markSent records the broker's confirmations of rows in one statement,
// for the rows this claim still holds.
func (r *Relay) markSent(ctx context.Context, done []sentRow, token string) {
	if len(done) == 0 {
		return
	}
	mctx, cancel := markCtx(ctx)
	defer cancel()
	ob := r.ob
	now := ob.d.now()
	var cases strings.Builder
	args := make([]any, 0, 2*len(done)+2)
	ids := make([]int64, len(done))
	cases.WriteString("CASE id")
	for i, d := range done {
		cases.WriteString(" WHEN ? THEN ?")
		args = append(args, d.row.ID, truncate(d.brokerID, 128))
		ids[i] = d.row.ID
	}
	cases.WriteString(" END")
	args = append(args, ids, token)
	res := ob.db.WithContext(mctx).Exec("UPDATE "+ob.table+" SET status = 1, broker_msg_id = "+cases.String()+", sent_at = "+now+
		", claim_until = NULL, updated_at = "+now+" WHERE id IN ? AND claimed_by = ? AND status = 0", args...)
	if res.Error != nil {
		// The rows stay claimed; after the deadline they are sent again
		// with the same message IDs and consumers' dedup absorbs the
		// duplicates.
		ob.log.Error("outbox relay: mark sent failed", "relay", r.cfg.ID, "rows", len(done), "err", res.Error)
		return
	}
	marked := map[int64]bool{}
	if res.RowsAffected < int64(len(done)) {
		// Some claims were taken over: find out which rows are ours.
		var mine []int64
		if err := ob.db.WithContext(mctx).Raw("SELECT id FROM "+ob.table+" WHERE id IN ? AND claimed_by = ? AND status = 1", ids, token).
			Scan(&mine).Error; err != nil {
			ob.log.Error("outbox relay: reading marks failed", "relay", r.cfg.ID, "err", err)
		}
		for _, id := range mine {
			marked[id] = true
		}
	}
	for _, d := range done {
		if res.RowsAffected < int64(len(done)) && !marked[d.row.ID] {
			r.lostClaim(d.row)
			continue
		}
		r.sent.Add(1)
		if h := r.cfg.Hooks.Sent; h != nil {
			h(r.cfg.ID, d.row.MessageID, d.brokerID)
		}
	}
}

func (r *Relay) lostClaim(row *sendRow) {
	r.lost.Add(1)
	r.ob.log.Warn("outbox relay: row sent after its claim was taken over", "relay", r.cfg.ID, "message_id", row.MessageID)
	if h := r.cfg.Hooks.LostClaim; h != nil {
		h(r.cfg.ID, row.MessageID)
	}
}

// maxErrorLen bounds last_error.
const maxErrorLen = 2000

// recordFailure counts a failed attempt: the row is due again after the
// backoff, or failed if the error is permanent or attempts are exhausted.
func (r *Relay) recordFailure(ctx context.Context, row *sendRow, token string, cause error) {
	r.failures.Add(1)
	attempts := row.Attempts + 1
	permanent := idemq.IsPermanent(cause)
	final := permanent || attempts >= r.cfg.MaxAttempts
	msg := cause.Error()
	status := StatusPending
	if final {
		status = StatusFailed
		if !permanent {
			msg = fmt.Sprintf("attempts exhausted (%d/%d): %s", attempts, r.cfg.MaxAttempts, msg)
		}
	}
	delay := r.cfg.Backoff.Delay(attempts, mrand.Float64)
	mctx, cancel := markCtx(ctx)
	defer cancel()
	ob := r.ob
	next, nextArg := ob.d.plus(delay)
	res := ob.db.WithContext(mctx).Exec("UPDATE "+ob.table+" SET status = ?, attempts = ?, last_error = ?, next_attempt_at = "+next+
		", claim_until = NULL, updated_at = "+ob.d.now()+" WHERE id = ? AND claimed_by = ? AND status = 0",
		int(status), attempts, truncate(msg, maxErrorLen), nextArg, row.ID, token)
	if res.Error != nil {
		ob.log.Error("outbox relay: record failure failed", "relay", r.cfg.ID, "message_id", row.MessageID, "err", res.Error, "cause", cause)
		return
	}
	if res.RowsAffected == 0 {
		r.ob.log.Warn("outbox relay: claim taken over before the failure was recorded", "relay", r.cfg.ID, "message_id", row.MessageID, "cause", cause)
		return
	}
	if final {
		r.failed.Add(1)
		ob.log.Error("outbox relay: message failed; left for an operator to redrive", "relay", r.cfg.ID,
			"message_id", row.MessageID, "topic", row.Topic, "attempts", attempts, "err", msg)
	} else {
		ob.log.Warn("outbox relay: send failed; will retry", "relay", r.cfg.ID, "message_id", row.MessageID,
			"attempts", attempts, "retry_in", delay, "err", cause)
	}
	if h := r.cfg.Hooks.Failed; h != nil {
		h(r.cfg.ID, row.MessageID, cause, attempts, final)
	}
}

// release hands claimed rows back unsent, without counting an attempt.
func (r *Relay) release(ctx context.Context, rows []sendRow, token string) {
	if len(rows) == 0 {
		return
	}
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
	}
	mctx, cancel := markCtx(ctx)
	defer cancel()
	ob := r.ob
	res := ob.db.WithContext(mctx).Exec("UPDATE "+ob.table+" SET claim_until = NULL, updated_at = "+ob.d.now()+
		" WHERE id IN ? AND claimed_by = ? AND status = 0", ids, token)
	if res.Error != nil {
		ob.log.Error("outbox relay: release failed; rows come back after the visibility deadline", "relay", r.cfg.ID, "rows", len(rows), "err", res.Error)
		return
	}
	r.released.Add(res.RowsAffected)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
