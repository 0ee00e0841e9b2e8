package remoting_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq/integration/rmqtest"
	"github.com/idemq/idemq/internal/remoting"
)

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestCallAndChecks(t *testing.T) {
	b := rmqtest.NewTest(t, rmqtest.Config{Topics: []string{"orders"}})
	ctx := context.Background()
	r, err := remoting.Call(ctx, b.Addr(), remoting.CodeGetRouteInfoByTopic, map[string]string{"topic": "nope"}, nil)
	if err != nil || r.Code != remoting.ResponseTopicNotExist {
		t.Fatalf("route of a missing topic: %+v, %v", r, err)
	}
	down := closedAddr(t)
	_, err = remoting.TopicExists(ctx, []string{down}, "orders")
	if !errors.Is(err, remoting.ErrNoNameServer) || !strings.Contains(err.Error(), down) {
		t.Fatalf("none answers: %v", err)
	}
	for topic, want := range map[string]bool{"orders": true, "nope": false} {
		if ok, err := remoting.TopicExists(ctx, []string{down, b.Addr()}, topic); err != nil || ok != want {
			t.Fatalf("TopicExists(%s) = %v, %v", topic, ok, err)
		}
	}
}

// A server that accepts and never answers costs the context's deadline,
// not more; one that answers garbage is an error.
func TestCallBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				if n > 0 && strings.Contains(string(buf[:n]), `"code":106`) {
					_, _ = c.Write([]byte{0, 0, 0, 8, 1, 0, 0, 4, 'j', 'u', 'n', 'k'}) // not JSON
				}
				time.Sleep(5 * time.Second)
				c.Close()
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if _, err := remoting.Call(ctx, ln.Addr().String(), remoting.CodeGetRouteInfoByTopic, nil, nil); err == nil {
		t.Fatal("a silent server answered")
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("Call took %v past a 300 ms deadline", took)
	}
	if _, err := remoting.Call(context.Background(), ln.Addr().String(), remoting.CodeGetBrokerClusterInfo, nil, nil); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("garbage reply: %v", err)
	}
}
