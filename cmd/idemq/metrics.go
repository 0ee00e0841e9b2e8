package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/idemq/idemq/admin"
)

func (a *app) metricsCmd() *cobra.Command {
	var listen string
	var staleAfter time.Duration
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Serve the table metrics (dead letters waiting, attempts, outbox backlog) for Prometheus at /metrics",
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.open(cmd, false); err != nil {
				return err
			}
			adm := a.adm
			if staleAfter > 0 {
				var err error
				if adm, err = admin.New(a.db, admin.Config{TablePrefix: a.prefix, StaleAfter: staleAfter}); err != nil {
					return err
				}
			}
			reg := prometheus.NewRegistry()
			if err := reg.Register(adm.Collector(admin.CollectorConfig{})); err != nil {
				return err
			}
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "Serving idemq table metrics on http://%s/metrics\n", ln.Addr())
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9464", "address to serve /metrics on")
	cmd.Flags().DurationVar(&staleAfter, "stale-after", 0, "stale attempts threshold (default 3h)")
	return cmd
}
