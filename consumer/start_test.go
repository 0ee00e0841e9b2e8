package consumer

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/testenv"
)

func startConfig(ns string) Config {
	return Config{
		NameServers:   []string{ns},
		Group:         "cg-start",
		Subscriptions: []Subscription{{Topic: "orders"}},
		Handler:       idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }),
		WithoutDedup:  true,
		Logger:        slog.New(slog.DiscardHandler),
	}
}

// An unreachable name server is reported as such, not as the client's
// "route info not found".
func TestStartReportsUnreachableNameServer(t *testing.T) {
	addr := testenv.DeadAddr(t) // nothing listens there
	c, err := New(startConfig(addr))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = c.Start(context.Background())
	if err == nil {
		_ = c.Shutdown(context.Background())
		t.Fatal("Start succeeded without a name server")
	}
	if !strings.Contains(err.Error(), "no name server answers") || !strings.Contains(err.Error(), addr) ||
		strings.Contains(err.Error(), "route info not found") {
		t.Fatalf("Start error %q does not say the name server is unreachable", err)
	}
	t.Logf("Start failed after %v: %v", time.Since(begin), err)
}

// A topic nobody created is reported as such.
func TestStartReportsMissingTopic(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{})
	c, err := New(startConfig(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	if err == nil {
		_ = c.Shutdown(context.Background())
		t.Fatal("Start succeeded on a topic that does not exist")
	}
	if !strings.Contains(err.Error(), `topic "orders" does not exist`) {
		t.Fatalf("Start error %q does not name the missing topic", err)
	}
}
