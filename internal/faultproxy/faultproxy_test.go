package faultproxy

import (
	"bufio"
	"net"
	"slices"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// roundTrip writes a line and reads the echo, with a deadline.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestForwards(t *testing.T) {
	p := newProxy(t)
	c, r := dial(t, p)
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
}

func TestCutResetsAndRestoreReconnects(t *testing.T) {
	p := newProxy(t)
	c, r := dial(t, p)
	if _, err := roundTrip(c, r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if _, err := roundTrip(c, r, 5*time.Second); err == nil {
		t.Fatal("round trip on a cut connection succeeded")
	}
	c2, r2 := dial(t, p)
	if _, err := roundTrip(c2, r2, 5*time.Second); err == nil {
		t.Fatal("a new connection through a cut proxy reached the server")
	}
	p.Restore()
	c3, r3 := dial(t, p)
	if got, err := roundTrip(c3, r3, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("after Restore: %q, %v", got, err)
	}
	if s := p.Stats(); s.Cuts != 1 || s.Severed < 2 {
		t.Fatalf("stats = %+v, want 1 cut and at least 2 severed", s)
	}
}

func TestStallHoldsBytesUntilResume(t *testing.T) {
	p := newProxy(t)
	c, r := dial(t, p)
	if _, err := roundTrip(c, r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	// The read times out: the bytes are held, not lost and not refused.
	_, err := roundTrip(c, r, 300*time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("stalled round trip: err = %v, want a timeout", err)
	}
	p.Resume()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("after Resume the held line: %q, %v", got, err)
	}
}

func TestUpstreamPortsNameTheServerSideSessions(t *testing.T) {
	// The server records the remote port of every connection it accepts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan int, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).Port
			go func() { defer c.Close(); _, _ = c.Read(make([]byte, 1)) }()
		}
	}()
	p, err := New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var serverSaw int
	select {
	case serverSaw = <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw no connection")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ports := p.UpstreamPorts()
		if slices.Contains(ports, serverSaw) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("UpstreamPorts() = %v, want it to contain %d", ports, serverSaw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
