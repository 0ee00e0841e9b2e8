package testenv

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of a real server, for fault
// injection: point a client at [Proxy.Addr], then [Proxy.Cut] the link to
// make the server look dead and [Proxy.Restore] it to bring it back. The
// server itself is never touched, so other tests keep using it.
//
// While cut, every open connection is reset (the client sees "connection
// reset by peer" or EOF on its next read or write, at once, not after a
// timeout) and every new connection is accepted and reset immediately.
// All methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	resumed *sync.Cond // broadcast when a stall ends or the proxy closes
	stalled bool
	cut     bool
	closed  bool
	cuts    int
	severed int
	links   map[*link]struct{}
}

// link is one proxied connection: the client side and, once dialled, the
// server side.
type link struct {
	client   net.Conn
	upstream net.Conn
}

// NewProxy starts a proxy on 127.0.0.1 (a free port) that forwards to
// target (host:port). It is closed, with every connection, when the test
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy listen: %v", err)
	}
	p := &Proxy{target: target, ln: ln, links: make(map[*link]struct{})}
	p.resumed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr returns the proxy's host:port, to give clients instead of the
// server's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut severs the link: it resets every open connection and makes the proxy
// reset every new one until [Proxy.Restore]. Cutting a cut proxy changes
// nothing but [Proxy.Cuts].
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.cuts++
	for l := range p.links {
		p.severed++
		l.reset()
		delete(p.links, l)
	}
}

// Restore ends a [Proxy.Cut]: new connections reach the server again.
// Connections reset by the cut stay closed; clients must reconnect.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Stall freezes the link without closing anything: connections stay open,
// but no byte is forwarded either way (new connections are accepted and
// wait too) until [Proxy.Resume]. The client sees a server that stopped
// answering, as with a network partition or a paused server, and only its
// own timeouts end its calls. A [Proxy.Cut] still resets stalled
// connections.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

// Resume ends a [Proxy.Stall]: the bytes held back are forwarded.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = false
	p.resumed.Broadcast()
}

// waitUnstalled blocks while the proxy is stalled.
func (p *Proxy) waitUnstalled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stalled && !p.closed {
		p.resumed.Wait()
	}
}

// pipe copies src to dst, holding the bytes back while the proxy is
// stalled.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.waitUnstalled()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Cuts returns how many times [Proxy.Cut] has been called, so a test that
// injects faults concurrently can check that a fault really happened.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// Severed returns how many connections the proxy has reset because of a
// cut: open ones at the moment of [Proxy.Cut] and new ones while cut.
func (p *Proxy) Severed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.severed
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.resumed.Broadcast()
	for l := range p.links {
		l.reset()
		delete(p.links, l)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (such as EMFILE): back off briefly.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		l := &link{client: c}
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			l.reset()
			continue
		case p.cut:
			p.severed++
			p.mu.Unlock()
			l.reset()
			continue
		}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(l)
	}
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	p.mu.Lock()
	_, live := p.links[l]
	switch {
	case err != nil:
		// The server is down: the client sees its connection reset.
		delete(p.links, l)
		p.mu.Unlock()
		l.reset()
		return
	case !live:
		// Cut (or closed) while dialling: the client side is already reset.
		p.mu.Unlock()
		resetConn(up)
		return
	}
	l.upstream = up
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	go func() { p.pipe(up, l.client); done <- struct{}{} }()
	go func() { p.pipe(l.client, up); done <- struct{}{} }()
	<-done
	// One side ended (either peer closed, or a cut reset both): end the link.
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
	_ = l.client.Close()
	_ = up.Close()
	<-done
}

// reset closes both sides of l with a TCP RST. Call it with p.mu held or
// with l no longer in p.links, so l.upstream is not being set concurrently.
func (l *link) reset() {
	resetConn(l.client)
	if l.upstream != nil {
		resetConn(l.upstream)
	}
}

// resetConn closes c so that the peer gets a TCP RST ("connection reset by
// peer") rather than an orderly EOF.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
