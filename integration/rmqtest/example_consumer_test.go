//go:build rocketmq

// Behind the rocketmq tag, as every test that runs a live push consumer;
// scripts/test runs it with -race.

package rmqtest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/idemq/idemq/integration/rmqtest"
)

// A push consumer that fails once: the broker stores a retry copy in
// %RETRY%group and redelivers it after the scaled delay (level 3, 10 s,
// scaled to 100 ms), with the original topic and MsgId.
func Example_retry() {
	b, err := rmqtest.New(rmqtest.Config{TimeScale: 0.01, Topics: []string{"payments"}})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	ns := primitive.NamesrvAddr{b.Addr()}

	deliveries := make(chan string, 4)
	c, err := rocketmq.NewPushConsumer(
		consumer.WithNameServer(ns),
		consumer.WithGroupName("example-group"),
		consumer.WithInstance("example-consumer"),
		consumer.WithConsumerModel(consumer.Clustering),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	)
	if err != nil {
		log.Fatal(err)
	}
	err = c.Subscribe("payments", consumer.MessageSelector{Type: consumer.TAG, Expression: "*"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			m := msgs[0]
			deliveries <- fmt.Sprintf("%s %s attempt %d", m.Topic, m.Body, m.ReconsumeTimes+1)
			if m.ReconsumeTimes == 0 {
				return consumer.ConsumeRetryLater, nil
			}
			return consumer.ConsumeSuccess, nil
		})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Start(); err != nil {
		log.Fatal(err)
	}
	defer c.Shutdown()

	p, err := rocketmq.NewProducer(producer.WithNameServer(ns),
		producer.WithGroupName("example-producer"), producer.WithInstanceName("example-producer-2"))
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(); err != nil {
		log.Fatal(err)
	}
	defer p.Shutdown()
	if _, err := p.SendSync(context.Background(), primitive.NewMessage("payments", []byte("pay-1"))); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		select {
		case d := <-deliveries:
			fmt.Println(d)
		case <-time.After(10 * time.Second):
			log.Fatal("no delivery")
		}
	}
	fmt.Println("retry copies:", len(b.RetryMessages("example-group")))
	// Output:
	// payments pay-1 attempt 1
	// payments pay-1 attempt 2
	// retry copies: 1
}
