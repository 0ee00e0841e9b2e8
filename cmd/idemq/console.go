package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/idemq/idemq/admin/console"
)

// consoleFlags are the flags of `idemq console`.
type consoleFlags struct {
	addr     string
	token    string
	user     string
	password string
	readOnly bool
}

func (a *app) consoleCmd() *cobra.Command {
	var f consoleFlags
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the web console: overview, dead letters, outbox, attempts, keys, audit log",
		Long: `Serve the web console on --addr (default 127.0.0.1:8080).

Authentication: --token (or IDEMQ_CONSOLE_TOKEN) asks for a shared token,
--basic-user and --basic-password (or IDEMQ_CONSOLE_USER and
IDEMQ_CONSOLE_PASSWORD) ask for basic authentication. Without either the
console only listens on a loopback address, and records --actor as the
operator. --read-only serves no redrive or discard at all. Redrive
publishes through --namesrv, or with --via-outbox writes into the outbox
for the service's relays; without either the console can discard but not
redrive.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serveConsole(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fl.StringVar(&f.token, "token", os.Getenv("IDEMQ_CONSOLE_TOKEN"), "require this shared token, at least 16 characters (env IDEMQ_CONSOLE_TOKEN)")
	fl.StringVar(&f.user, "basic-user", os.Getenv("IDEMQ_CONSOLE_USER"), "require basic authentication as this user (env IDEMQ_CONSOLE_USER)")
	fl.StringVar(&f.password, "basic-password", os.Getenv("IDEMQ_CONSOLE_PASSWORD"), "the basic-authentication password (env IDEMQ_CONSOLE_PASSWORD)")
	fl.BoolVar(&f.readOnly, "read-only", false, "serve no redrive or discard")
	fl.BoolVar(&a.viaOutbox, "via-outbox", false, "redrive into the outbox (same transaction as the redrive) for the relays to send, instead of publishing through --namesrv")
	return cmd
}

// isLoopback reports whether addr listens on a loopback address only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// consoleAuth chooses the console's authentication from the flags.
func (a *app) consoleAuth(f consoleFlags) (console.Auth, error) {
	switch {
	case f.token != "" && (f.user != "" || f.password != ""):
		return console.Auth{}, errors.New("choose one of --token and --basic-user")
	case f.token != "":
		return console.Token(a.actor, f.token), nil
	case f.user != "" || f.password != "":
		if f.user == "" || f.password == "" {
			return console.Auth{}, errors.New("--basic-user and --basic-password go together")
		}
		return console.Basic("", map[string]string{f.user: f.password}), nil
	case !isLoopback(f.addr):
		return console.Auth{}, fmt.Errorf("refusing to serve the console on %s, which is not a loopback address, without authentication: "+
			"set --token or --basic-user/--basic-password, or listen on 127.0.0.1", f.addr)
	}
	return console.Unauthenticated(a.actor), nil
}

func (a *app) serveConsole(cmd *cobra.Command, f consoleFlags) error {
	auth, err := a.consoleAuth(f)
	if err != nil {
		return err
	}
	if _, err := a.open(cmd, (len(a.namesrv) > 0 || a.viaOutbox) && !f.readOnly); err != nil {
		return err
	}
	h, err := console.New(console.Config{Admin: a.adm, Auth: auth, ReadOnly: f.readOnly, Location: a.loc})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	mode := ""
	if f.readOnly {
		mode = ", read-only"
	}
	fmt.Fprintf(a.out, "idemq console on http://%s (auth: %s%s)\n", ln.Addr(), auth.Kind(), mode)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-cmd.Context().Done():
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}
}
