package outbox

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// process sends claimed rows, up to SendWindow at once, and records each
// outcome (see startBatch). It returns the number of rows the broker
// confirmed, once every send finished and its outcome was recorded.
func (r *Relay) process(ctx context.Context, c claimed) int {
	if len(c.rows) == 0 {
		return 0
	}
	return <-r.startBatch(ctx, c, make(chan struct{}, r.cfg.SendWindow))
}

// startBatch sends claimed rows, starting them in order, each once win
// (the sends in flight, shared by the batches of one relay loop, at most
// SendWindow) has room, and records each outcome. While it sends, a
// second goroutine (the batch's tender) marks confirmed rows as they come,
// several in one statement when they come faster than a mark takes, and
// extends the claim of the rows still held every Visibility/3, so a live
// relay's slow batch never becomes due to another relay. A relay that
// dies leaves its unmarked rows to be re-sent after the deadline, with
// the same message IDs. startBatch stops starting sends, releasing the
// rows not yet started, when ctx is done or the claim as last confirmed
// would not outlast the next send; the sends in flight finish.
//
// startBatch returns once every row was started or released, so that the
// relay's loop can go on with its next batch while this one's last sends
// are in flight. The channel it returns receives the number of rows the
// broker confirmed once every send finished and its outcome was recorded.
func (r *Relay) startBatch(ctx context.Context, c claimed, win chan struct{}) <-chan int {
	done := make(chan int, 1)
	if len(c.rows) == 0 {
		done <- 0
		return done
	}
	b := newBatch(r, c)
	finished := make(chan struct{})
	tended := make(chan struct{})
	go func() {
		defer close(tended)
		b.tend(ctx, finished)
	}()
	var (
		wg        sync.WaitGroup
		confirmed atomic.Int64
	)
	send := func(row *sendRow) {
		defer wg.Done()
		defer func() { <-win }()
		id, ok := r.handle(ctx, row, c.token)
		if !ok {
			// handle recorded the failure or released the row.
			b.forget(*row)
			return
		}
		confirmed.Add(1)
		if r.skipMark != nil && r.skipMark(row.MessageID) {
			b.forget(*row) // a test's relay "dying" between send and mark
			return
		}
		b.confirm(sentRow{row: row, brokerID: id})
	}
	for i := range c.rows {
		acquired := false
		select {
		case win <- struct{}{}:
			acquired = true
		case <-ctx.Done():
		}
		if ctx.Err() != nil || !b.outlasts(r.cfg.SendTimeout) {
			if acquired {
				<-win
			}
			rest := c.rows[i:]
			b.forget(rest...)
			r.release(ctx, rest, c.token)
			break
		}
		wg.Add(1)
		go send(&c.rows[i])
	}
	go func() {
		wg.Wait()
		close(finished)
		<-tended
		done <- int(confirmed.Load())
	}()
	return done
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

// Confirmed rows wait for their mark until markRows of them are waiting,
// markDelay passed since the first of them was confirmed, or the batch's
// last send finished: a few large statements cost the database much less
// than one per row, and a row confirmed and not yet marked when the relay
// dies is only sent again (same message ID) after the deadline.
const (
	markRows  = 64
	markDelay = 5 * time.Millisecond
)

// tend marks confirmed rows as they come (see markRows) and extends the
// claim every Visibility/3, until finished is closed; then it marks what
// is left.
func (b *batch) tend(ctx context.Context, finished <-chan struct{}) {
	t := time.NewTicker(max(b.r.cfg.Visibility/3, time.Millisecond))
	defer t.Stop()
	due := time.NewTimer(markDelay)
	due.Stop()
	defer due.Stop()
	armed := false
	for {
		select {
		case <-b.kick:
			switch n := b.waiting(); {
			case n >= markRows:
				due.Stop()
				armed = false
				b.mark(ctx)
			case n > 0 && !armed:
				due.Reset(markDelay)
				armed = true
			}
		case <-due.C:
			armed = false
			b.mark(ctx)
		case <-t.C:
			b.extend(ctx)
		case <-finished:
			b.mark(ctx)
			return
		}
	}
}

// waiting is the number of confirmed rows waiting for their mark.
func (b *batch) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.confirmed)
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
