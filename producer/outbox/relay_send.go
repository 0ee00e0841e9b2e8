package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/idemq/idemq"
)

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
