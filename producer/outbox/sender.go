package outbox

import (
	"context"

	"github.com/idemq/idemq"
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
