package msgid_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/idemq/idemq/dedup/sqldedup/sqlitedb"
	"github.com/idemq/idemq/msgid"
)

// A node ID taken from configuration: the operator guarantees that no
// other live process uses node 7.
func ExampleNewGenerator() {
	g, err := msgid.NewGenerator(msgid.FixedNode(7), msgid.GeneratorConfig{})
	if err != nil {
		log.Fatal(err)
	}
	a, _ := g.NextID()
	b, _ := g.NextID()
	_, node, _, err := msgid.Parse(b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("distinct:", a != b, "node:", node)
	// Output:
	// distinct: true node: 7
}

// A node ID leased from the database (here the embedded SQLite), so that
// two running processes never share one: Start acquires a free node of the
// range and keeps it with heartbeats, Shutdown hands it back.
func ExampleNewSQLNodeLease() {
	dir, err := os.MkdirTemp("", "msgid-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(filepath.Join(dir, "app.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	lease, err := msgid.NewSQLNodeLease(db, msgid.NodeLeaseConfig{Migrate: true, MinNode: 40, NodeCount: 10})
	if err != nil {
		log.Fatal(err)
	}
	if err := lease.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer lease.Shutdown(ctx)
	ids, err := msgid.NewGenerator(lease, msgid.GeneratorConfig{})
	if err != nil {
		log.Fatal(err)
	}
	id, err := ids.NextID()
	if err != nil {
		log.Fatal(err)
	}
	_, node, _, _ := msgid.Parse(id)
	fmt.Println("node in 40..49:", node >= 40 && node <= 49, "leased:", node == lease.NodeID())
	// Output:
	// node in 40..49: true leased: true
}
