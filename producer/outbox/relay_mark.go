package outbox

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idemq/idemq"
)

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
	if h := r.cfg.hooks.MarkStatement; h != nil {
		h(r.cfg.ID, len(done))
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
		if h := r.cfg.hooks.Sent; h != nil {
			h(r.cfg.ID, d.row.MessageID, d.brokerID)
		}
	}
}

func (r *Relay) lostClaim(row *sendRow) {
	r.lost.Add(1)
	r.ob.log.Warn("outbox relay: row sent after its claim was taken over", "relay", r.cfg.ID, "message_id", row.MessageID)
	if h := r.cfg.hooks.LostClaim; h != nil {
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
	if h := r.cfg.hooks.Failed; h != nil {
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
