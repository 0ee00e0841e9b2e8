package producer_test

import (
	"context"
	"fmt"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer"
)

// A producer stamps each message with a snowflake ID before sending it; the
// ID travels as a property and in the Keys, and a re-send keeps it.
func Example() {
	broker, err := rmqtest.New(rmqtest.Config{Topics: []string{"orders"}}) // an in-process test broker
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	// Node 1 from configuration; in production lease one with
	// msgid.NewSQLNodeLease or msgid.NewRedisNodeLease.
	ids, err := msgid.NewGenerator(msgid.FixedNode(1), msgid.GeneratorConfig{})
	if err != nil {
		panic(err)
	}
	p, err := producer.New(producer.Config{
		NameServers: []string{broker.Addr()},
		Group:       "example-producer",
		IDSource:    ids,
	})
	if err != nil {
		panic(err)
	}
	if err := p.Start(context.Background()); err != nil {
		panic(err)
	}
	defer p.Shutdown(context.Background())

	msg := &idemq.Message{Topic: "orders", Tags: "created", Body: []byte(`{"order":123}`)}
	ctx := context.Background()
	if _, err := p.SendSync(ctx, msg); err != nil {
		panic(err)
	}
	if _, err := p.SendSync(ctx, msg); err != nil { // a re-send
		panic(err)
	}

	for _, m := range broker.Messages("orders") {
		fmt.Println(m.GetProperty(idemq.PropertyMessageID) == msg.ID, m.GetKeys() == msg.ID)
	}
	_, node, _, _ := msgid.Parse(msg.ID)
	fmt.Println("node", node)
	// Output:
	// true true
	// true true
	// node 1
}
