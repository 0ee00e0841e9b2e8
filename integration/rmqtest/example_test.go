package rmqtest_test

import (
	"context"
	"fmt"
	"log"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"

	"github.com/idemq/idemq/integration/rmqtest"
)

// A producer sends to the in-process broker, and the test inspects what
// the broker stored. The topic must exist first, as on a real cluster
// (Config.Topics, CreateTopic, or package topics). Push consumers work the
// same way (point consumer.WithNameServer at b.Addr()); see Example_retry.
func Example() {
	rlog.SetLogLevel("error")
	b, err := rmqtest.New(rmqtest.Config{TimeScale: 0.01, Topics: []string{"orders"}})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	p, err := rocketmq.NewProducer(
		producer.WithNameServer(primitive.NamesrvAddr{b.Addr()}),
		producer.WithGroupName("example-producer"),
		producer.WithInstanceName("example-producer"),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(); err != nil {
		log.Fatal(err)
	}
	defer p.Shutdown()

	msg := primitive.NewMessage("orders", []byte(`{"order":123}`))
	msg.WithTag("created")
	msg.WithKeys([]string{"order-123"})
	res, err := p.SendSync(context.Background(), msg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("status OK:", res.Status == primitive.SendOK)

	for _, m := range b.Messages("orders") {
		fmt.Printf("%s %s %s %s\n", m.Topic, m.GetTags(), m.GetKeys(), m.Body)
	}
	fmt.Println(b.Topics())
	fmt.Println("sends:", b.Stats().Sends)
	// Output:
	// status OK: true
	// orders created order-123 {"order":123}
	// [orders]
	// sends: 1
}
