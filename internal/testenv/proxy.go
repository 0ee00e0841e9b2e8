package testenv

import (
	"testing"

	"github.com/idemq/idemq/internal/faultproxy"
)

// Proxy is a loopback TCP proxy in front of a real server, for fault
// injection in tests: point a client at [Proxy.Addr], then Cut the link to
// make the server look dead and Restore it to bring it back, or Stall and
// Resume it to make the server hang. The server itself is never touched,
// so other tests keep using it. It is the chaos harness's proxy
// (internal/faultproxy), closed with every connection when the test ends.
type Proxy struct {
	*faultproxy.Proxy
}

// NewProxy starts a proxy on 127.0.0.1 (a free port) that forwards to
// target (host:port). It is closed, with every connection, when the test
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatalf("testenv: proxy: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &Proxy{p}
}

// Cuts returns how many times Cut has been called, so a test that injects
// faults concurrently can check that a fault really happened.
func (p *Proxy) Cuts() int { return p.Stats().Cuts }

// Severed returns how many connections the proxy has reset because of a
// cut: open ones at the moment of Cut and new ones while cut.
func (p *Proxy) Severed() int { return p.Stats().Severed }
