package idemq_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/idemq/idemq"
)

// A handler wrapped by one middleware. Chain puts the first middleware
// outermost; a nil handler or middleware is an error, not a panic at the
// first message.
func ExampleChain() {
	handler := idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
		fmt.Printf("handle %s (key %s)\n", msg.Topic, msg.DedupKey())
		if len(msg.Body) == 0 {
			return idemq.Permanent(errors.New("empty body"))
		}
		return nil
	})
	// A middleware sees every message before the handler and every error
	// after it.
	logging := func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			fmt.Printf("attempt %d of %s\n", msg.Attempt, msg.ID)
			err := next.Handle(ctx, msg)
			fmt.Printf("-> err=%v permanent=%v\n", err, idemq.IsPermanent(err))
			return err
		})
	}
	h, err := idemq.Chain(handler, logging)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	_ = h.Handle(ctx, &idemq.Message{ID: "1790000000000000001", Topic: "orders", Body: []byte(`{"order":123}`), Attempt: 1})
	_ = h.Handle(ctx, &idemq.Message{ID: "1790000000000000002", Key: "order:124", Topic: "orders", Attempt: 1})

	_, err = idemq.Chain(nil, logging)
	fmt.Println(errors.Is(err, idemq.ErrNilHandler))
	// Output:
	// attempt 1 of 1790000000000000001
	// handle orders (key 1790000000000000001)
	// -> err=<nil> permanent=false
	// attempt 1 of 1790000000000000002
	// handle orders (key order:124)
	// -> err=permanent: empty body permanent=true
	// true
}
