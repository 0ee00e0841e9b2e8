package admin

import (
	"context"

	"github.com/idemq/idemq"
)

// MessageSender is what ProducerSender needs of a producer: a send that
// keeps a message's ID. *producer.Producer implements it; its Send never
// asks its ID source for an ID when the message has one, so a producer
// built for redrives needs no node lease (give it an ID source that
// refuses, such as [NoIDs]).
type MessageSender interface {
	Send(ctx context.Context, msg *idemq.Message) (string, error)
}

// ProducerSender returns a Sender that publishes through p.
func ProducerSender(p MessageSender) Sender {
	return func(ctx context.Context, msg *idemq.Message) error {
		_, err := p.Send(ctx, msg)
		return err
	}
}

// NoIDs is an ID source that refuses to issue IDs: a producer that only
// redrives messages, which keep their IDs, never needs one, and so never
// needs a node lease.
type NoIDs struct{}

// NextID always fails.
func (NoIDs) NextID() (string, error) { return "", errNoIDs }

type noIDsError struct{}

func (noIDsError) Error() string {
	return "admin: this producer only redrives messages with their own IDs and issues none"
}

var errNoIDs error = noIDsError{}
