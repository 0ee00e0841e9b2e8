// Package nameserver turns RocketMQ name server addresses into the IP:port
// form rocketmq-client-go demands (it rejects "localhost:9876").
package nameserver

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// Check reports whether addr is a host:port with a non-empty host and a
// port in 1..65535. It returns the host and the port.
func Check(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("name server %q: %w", addr, err)
	}
	if host == "" {
		return "", "", fmt.Errorf("name server %q: no host", addr)
	}
	if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 {
		return "", "", fmt.Errorf("name server %q: bad port %q", addr, port)
	}
	return host, port, nil
}

// Resolve checks every address and resolves host names to IP addresses,
// preferring IPv4, which every broker setup listens on.
func Resolve(ctx context.Context, addrs []string) (primitive.NamesrvAddr, error) {
	out := make(primitive.NamesrvAddr, 0, len(addrs))
	for _, a := range addrs {
		host, port, err := Check(a)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip != nil {
			out = append(out, net.JoinHostPort(ip.String(), port))
			continue
		}
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("resolve name server %q: %w", a, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("name server %q resolves to no address", a)
		}
		ip := ips[0].IP
		for _, cand := range ips {
			if cand.IP.To4() != nil {
				ip = cand.IP
				break
			}
		}
		out = append(out, net.JoinHostPort(ip.String(), port))
	}
	return out, nil
}
