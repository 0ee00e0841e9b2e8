package topics_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/topics"
)

func TestCreateThenRouted(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{})
	ctx := context.Background()
	if err := topics.Create(ctx, []string{b.Addr()}, "orders", topics.Config{Queues: 6}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.Topics(), ","); got != "orders" {
		t.Fatalf("topics %s", got)
	}
	// Creating again is an update, and safe.
	if err := topics.Create(ctx, []string{b.Addr()}, "orders", topics.Config{}); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.TopicsCreated != 2 {
		t.Fatalf("TopicsCreated %d", st.TopicsCreated)
	}
	// Explicit brokers skip the cluster lookup.
	if err := topics.Create(ctx, []string{b.Addr()}, "direct", topics.Config{Brokers: []string{b.Addr()}}); err != nil {
		t.Fatal(err)
	}
	if err := topics.Create(ctx, []string{b.Addr()}, "in-cluster", topics.Config{Cluster: rmqtest.ClusterName}); err != nil {
		t.Fatal(err)
	}
}

// A refused create is an error: the client library's admin.CreateTopic
// would have returned nil.
func TestRefusedCreateIsAnError(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{})
	err := topics.Create(context.Background(), []string{b.Addr()}, rmqtest.ClusterName, topics.Config{})
	if !errors.Is(err, topics.ErrNotCreated) {
		t.Fatalf("err = %v, want ErrNotCreated", err)
	}
	err = topics.Create(context.Background(), []string{b.Addr()}, "x", topics.Config{Cluster: "elsewhere"})
	if err == nil || !strings.Contains(err.Error(), "no master broker in cluster") {
		t.Fatalf("unknown cluster: %v", err)
	}
	for _, bad := range []string{"", "a b", strings.Repeat("t", 128)} {
		if err := topics.Create(context.Background(), []string{b.Addr()}, bad, topics.Config{}); err == nil {
			t.Fatalf("topic %q accepted", bad)
		}
	}
	if err := topics.Create(context.Background(), []string{b.Addr()}, "q", topics.Config{Queues: 2000}); err == nil {
		t.Fatal("2000 queues accepted")
	}
}

func TestUnreachableNameServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = topics.Create(ctx, []string{addr}, "orders", topics.Config{})
	if err == nil || !strings.Contains(err.Error(), "no name server answered") {
		t.Fatalf("err = %v", err)
	}
}
