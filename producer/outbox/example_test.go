package outbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/msgid"
	"github.com/idemq/idemq/producer/outbox"
)

// An outbox on the embedded default, SQLite: the message is written in the
// business transaction, and a relay sends it once the transaction has
// committed. The Sender here prints; in production it is a started
// *producer.Producer.
func Example() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(filepath.Join(dir, "app.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	ids, err := msgid.NewGenerator(msgid.FixedNode(1), msgid.GeneratorConfig{})
	if err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.New(db, outbox.Config{IDSource: ids})
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	sent := make(chan struct{})
	printer := outbox.SenderFunc(func(_ context.Context, msg *idemq.Message) (string, error) {
		fmt.Printf("sent to %s: %s\n", msg.Topic, msg.Body)
		close(sent)
		return "broker-id", nil
	})
	relay, err := outbox.NewRelay(ob, printer, outbox.RelayConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer relay.Shutdown(ctx)

	err = db.Transaction(func(tx *gorm.DB) error {
		// ... the business writes go here, through tx ...
		return ob.Enqueue(tx, &idemq.Message{Topic: "orders", Body: []byte("order 42 created")})
	})
	if err != nil {
		log.Fatal(err)
	}
	relay.Notify() // send now rather than at the next poll
	<-sent
	// Output:
	// sent to orders: order 42 created
}
