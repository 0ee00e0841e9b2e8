package testenv

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// proxiedRedis returns a client that reaches the test Redis through p. Its
// timeouts are long and it never retries, so an error after a cut can only
// come from the proxy resetting the connection, not from a timeout.
func proxiedRedis(t *testing.T, p *Proxy) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:         p.Addr(),
		MaxRetries:   -1,
		DialTimeout:  time.Minute,
		ReadTimeout:  time.Minute,
		WriteTimeout: time.Minute,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func notTimeout(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error; want the connection reset", what)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: %v is a timeout; want an immediate reset", what, err)
	}
}

func TestProxyRedis(t *testing.T) {
	ctx := context.Background()
	p := NewProxy(t, RedisAddr(t))
	c := proxiedRedis(t, p)
	key := KeyPrefix(t) + "v"

	if err := c.Set(ctx, key, "through the proxy", 0).Err(); err != nil {
		t.Fatalf("SET through the proxy: %v", err)
	}
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "through the proxy" {
		t.Fatalf("GET through the proxy = %q, %v", got, err)
	}

	p.Cut()
	notTimeout(t, "PING after Cut (pooled connection)", c.Ping(ctx).Err())
	notTimeout(t, "PING after Cut (new connection)", c.Ping(ctx).Err())
	if got := p.Severed(); got < 2 {
		t.Errorf("Severed() = %d, want at least 2 (the open connection and a new one)", got)
	}

	p.Restore()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restore: %v", err)
	}
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "through the proxy" {
		t.Fatalf("GET after Restore = %q, %v", got, err)
	}

	p.Cut()
	p.Cut()
	if got := p.Cuts(); got != 3 {
		t.Errorf("Cuts() = %d after three cuts, want 3", got)
	}
}

// A raw connection made while the proxy is cut is reset at once.
func TestProxyNewConnectionWhileCut(t *testing.T) {
	up := echoServer(t)
	p := NewProxy(t, up)

	conn := dial(t, p.Addr())
	echo(t, conn, "before")

	p.Cut()
	readFails(t, conn)
	connectionFails(t, p.Addr())

	p.Restore()
	echo(t, dial(t, p.Addr()), "after")
}

// A target that refuses connections: the client's connection is reset, and
// that is not counted as a cut.
func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	p := NewProxy(t, addr)
	connectionFails(t, p.Addr())
	if p.Severed() != 0 || p.Cuts() != 0 {
		t.Errorf("Severed() = %d, Cuts() = %d; want 0 and 0", p.Severed(), p.Cuts())
	}
}

// Traffic, cuts and restores from many goroutines at once: run under -race.
func TestProxyConcurrent(t *testing.T) {
	ctx := context.Background()
	p := NewProxy(t, RedisAddr(t))
	c := proxiedRedis(t, p)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = c.Ping(ctx).Err() // fails while cut; must not hang
			}
		}()
	}
	const cuts = 50
	for range cuts {
		p.Cut()
		_ = p.Severed()
		time.Sleep(time.Millisecond)
		p.Restore()
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if got := p.Cuts(); got != cuts {
		t.Errorf("Cuts() = %d, want %d", got, cuts)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		// One pooled connection may have been reset by the last cut.
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING after the last Restore: %v", err)
		}
	}
}

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := readFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
}

func readFull(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readFails checks that reading c ends in an error (reset or EOF) and not
// in the one-minute deadline.
func readFails(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	notTimeout(t, "read from a cut connection", err)
}

// connectionFails checks that a new connection to addr is reset: either the
// dial itself fails (the reset arrived before the handshake finished) or the
// first read does, and neither by timeout.
func connectionFails(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Minute)
	if err != nil {
		notTimeout(t, "dial a cut proxy", err)
		return
	}
	t.Cleanup(func() { _ = c.Close() })
	readFails(t, c)
}

// A stalled proxy holds bytes back without closing anything; Resume
// delivers them.
func TestProxyStall(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	echo(t, c, "before")
	p.Stall()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if n, err := c.Read(make([]byte, 4)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read through a stalled proxy: %d bytes, %v; want a timeout", n, err)
	}
	p.Resume()
	if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := readFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after Resume: %q, %v; want the held bytes", buf, err)
	}
	echo(t, c, "after")
}
