// Package faultproxy is a loopback TCP proxy that injects network faults
// between a client and a real server, for the chaos harness
// (cmd/idemq-chaos). The server itself is never touched: a shared database
// keeps serving everyone else while the clients behind the proxy see it die,
// hang or drop their connections.
//
// Three faults:
//
//   - Cut resets every open connection (the client sees "connection reset by
//     peer" at once) and resets every new one until Restore: a server that is
//     down.
//   - Stall stops moving bytes in both directions, and holds new connections
//     without dialling the server, until Resume: a server that hangs (a full
//     disk, a stopped process, a partitioned network). Clients see no error,
//     only their own timeouts.
//   - Upstream ports name the proxy's connections to the server by their
//     local port, so the caller can kill exactly those server sessions
//     (pg_terminate_backend, MySQL KILL) and no one else's.
package faultproxy

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from a loopback port to a target server. All
// methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	resumed *sync.Cond // broadcast when a stall ends or the proxy closes
	cut     bool
	stalled bool
	closed  bool
	links   map[*link]struct{}
	stats   Stats
}

// Stats counts what a Proxy has done.
type Stats struct {
	// Accepted is the number of client connections accepted.
	Accepted int
	// Cuts and Stalls count the calls to Cut and Stall.
	Cuts, Stalls int
	// Severed is the number of connections reset by cuts.
	Severed int
}

type link struct {
	client   net.Conn
	upstream net.Conn
}

// New starts a proxy on 127.0.0.1 (a free port) that forwards to target
// (host:port). Close it when done.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, links: make(map[*link]struct{})}
	p.resumed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's host:port, to give clients instead of the
// server's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the server's host:port.
func (p *Proxy) Target() string { return p.target }

// Cut resets every open connection and every new one until Restore. A cut
// also ends a stall.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.stalled = false
	p.stats.Cuts++
	for l := range p.links {
		p.stats.Severed++
		l.reset()
		delete(p.links, l)
	}
	p.resumed.Broadcast()
}

// Restore ends a Cut: new connections reach the server again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Stall stops moving bytes on every connection, and holds new connections
// undialled, until Resume.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stats.Stalls++
	}
	p.stalled = true
}

// Resume ends a Stall: held bytes and connections move again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = false
	p.resumed.Broadcast()
}

// UpstreamPorts returns the local ports of the proxy's open connections to
// the server: the client ports the server sees for the sessions behind this
// proxy.
func (p *Proxy) UpstreamPorts() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ports []int
	for l := range p.links {
		if l.upstream == nil {
			continue
		}
		if a, ok := l.upstream.LocalAddr().(*net.TCPAddr); ok {
			ports = append(ports, a.Port)
		}
	}
	return ports
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Close stops the proxy and resets every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.stalled = false
	for l := range p.links {
		l.reset()
		delete(p.links, l)
	}
	p.resumed.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// waitFlowing blocks while the proxy is stalled. It returns false if l was
// severed (cut or closed) meanwhile.
func (p *Proxy) waitFlowing(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stalled && !p.closed {
		p.resumed.Wait()
	}
	_, live := p.links[l]
	return live && !p.closed
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		l := &link{client: c}
		p.mu.Lock()
		p.stats.Accepted++
		if p.closed || p.cut {
			if p.cut {
				p.stats.Severed++
			}
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
	if !p.waitFlowing(l) {
		l.reset()
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	p.mu.Lock()
	_, live := p.links[l]
	switch {
	case err != nil:
		delete(p.links, l)
		p.mu.Unlock()
		l.reset()
		return
	case !live:
		p.mu.Unlock()
		resetConn(up)
		return
	}
	l.upstream = up
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	go func() { p.pipe(l, up, l.client); done <- struct{}{} }()
	go func() { p.pipe(l, l.client, up); done <- struct{}{} }()
	<-done
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
	_ = l.client.Close()
	_ = up.Close()
	<-done
}

// pipe copies src to dst, holding every chunk while the proxy is stalled.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitFlowing(l) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// EOF or a reset: the link ends (database protocols do not
			// half-close).
			return
		}
	}
}

// reset closes both sides of l with a TCP RST. Call it with p.mu held or
// with l no longer in p.links.
func (l *link) reset() {
	resetConn(l.client)
	if l.upstream != nil {
		resetConn(l.upstream)
	}
}

func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
