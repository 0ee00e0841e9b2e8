package testenv

import (
	"net"
	"testing"
)

// DeadAddr returns a loopback host:port nothing listens on (it was free a
// moment ago), for tests of a server that does not answer.
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
