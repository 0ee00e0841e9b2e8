package consumer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/middleware"
)

func validConfig() Config {
	return Config{
		NameServers:   []string{"127.0.0.1:9876"},
		Group:         "rewards",
		Subscriptions: []Subscription{{Topic: "orders"}},
		Handler:       idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil }),
		WithoutDedup:  true,
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error
	}{
		{"no name servers", func(c *Config) { c.NameServers = nil }, "NameServers is empty"},
		{"name server without port", func(c *Config) { c.NameServers = []string{"10.0.0.1"} }, "missing port"},
		{"name server bad port", func(c *Config) { c.NameServers = []string{"10.0.0.1:99999"} }, "bad port"},
		{"name server no host", func(c *Config) { c.NameServers = []string{":9876"} }, "no host"},
		{"no group", func(c *Config) { c.Group = "" }, "Group is empty"},
		{"group with space", func(c *Config) { c.Group = "my group" }, "may hold only"},
		{"group too long", func(c *Config) { c.Group = strings.Repeat("g", idemq.MaxKeyLen+1) }, "longer than"},
		{"no subscriptions", func(c *Config) { c.Subscriptions = nil }, "Subscriptions is empty"},
		{"zero start timestamp", func(c *Config) { c.StartFrom = StartFromTimestamp(time.Time{}) }, "zero time"},
		{"empty topic", func(c *Config) { c.Subscriptions = []Subscription{{}} }, "Subscriptions[0].Topic"},
		{"topic twice", func(c *Config) {
			c.Subscriptions = []Subscription{{Topic: "a", Tags: "x"}, {Topic: "a", Tags: "y"}}
		}, "subscribed twice"},
		{"nil handler", func(c *Config) { c.Handler = nil }, "nil handler"},
		{"nil HandlerFunc", func(c *Config) { c.Handler = idemq.HandlerFunc(nil) }, "nil handler"},
		{"nil middleware", func(c *Config) { c.Middleware = []idemq.Middleware{middleware.Recover(), nil} }, "Middleware[1]"},
		{"no store", func(c *Config) { c.WithoutDedup = false }, "Store is nil. Give the consumer a dedup store"},
		{"without dedup and a store", func(c *Config) { c.Store = noLedgerStore{} }, "WithoutDedup is set beside a Store"},
		{"without dedup and a custom chain", func(c *Config) { c.CustomChain = []idemq.Middleware{middleware.Recover()} }, "choose one"},
		{"empty custom chain", func(c *Config) { c.WithoutDedup = false; c.CustomChain = []idemq.Middleware{} }, "CustomChain is empty"},
		{"nil in custom chain", func(c *Config) { c.WithoutDedup = false; c.CustomChain = []idemq.Middleware{nil} }, "CustomChain[0]"},
		{"store without a ledger", func(c *Config) { c.WithoutDedup = false; c.Store = noLedgerStore{} }, "set Ledger"},
		{"fast path without dedup", func(c *Config) { c.FastPath = redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) }, "FastPath needs the Standard chain"},
		{"marker queue below -1", func(c *Config) { c.FastPathConfig.MarkerQueue = -2 }, "FastPathConfig.MarkerQueue -2"},
		{"negative goroutines", func(c *Config) { c.ConsumeGoroutines = -1 }, "ConsumeGoroutines"},
		{"batch too large", func(c *Config) { c.BatchSize = MaxBatchSize + 1 }, "BatchSize"},
		{"negative attempts", func(c *Config) { c.MaxAttempts = -2 }, "MaxAttempts"},
		{"suspend below 1ms", func(c *Config) { c.SuspendInterval = time.Microsecond }, "SuspendInterval"},
		{"max suspend below suspend", func(c *Config) {
			c.SuspendInterval = 2 * time.Second
			c.MaxSuspendInterval = time.Second
		}, "MaxSuspendInterval"},
		{"negative shutdown timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, "ShutdownTimeout"},
		{"bad retry policy", func(c *Config) { c.RetryPolicy.Multiplier = 0.5 }, "RetryPolicy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.edit(&cfg)
			c, err := New(cfg)
			if err == nil {
				_ = c.Shutdown(context.Background())
				t.Fatal("New accepted the config")
			}
			if tt.name == "no store" && !errors.Is(err, ErrNoStore) {
				t.Errorf("error %v does not wrap ErrNoStore", err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg := validConfig().withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.ConsumeGoroutines != DefaultConsumeGoroutines,
		cfg.BatchSize != 1,
		cfg.MaxAttempts != middleware.DefaultMaxAttempts,
		cfg.SuspendInterval != time.Second,
		cfg.MaxSuspendInterval != 30*time.Second,
		cfg.ShutdownTimeout != 30*time.Second,
		cfg.Subscriptions[0].Tags != "*",
		cfg.RetryPolicy != (middleware.RetryPolicy{}).WithDefaults(),
		cfg.Timeout != 30*time.Second,
		cfg.DeadLetter.MaxAttempts != cfg.MaxAttempts,
		cfg.Logger == nil:
		t.Errorf("defaults not applied: %+v", cfg)
	}
	// Two consumers of one group get distinct client instances.
	other := validConfig().withDefaults()
	if cfg.InstanceName == "" || cfg.InstanceName == other.InstanceName {
		t.Errorf("instance names %q and %q, want distinct", cfg.InstanceName, other.InstanceName)
	}
	if !strings.HasPrefix(cfg.InstanceName, "rewards@") {
		t.Errorf("instance name %q", cfg.InstanceName)
	}
	// A long SuspendInterval raises the default cap with it.
	long := validConfig()
	long.SuspendInterval = time.Minute
	if got := long.withDefaults().MaxSuspendInterval; got != time.Minute {
		t.Errorf("MaxSuspendInterval %s, want 1m", got)
	}
}

// noLedgerStore is a dedup.Store that keeps no ledger.
type noLedgerStore struct{}

func (noLedgerStore) Process(ctx context.Context, _ dedup.Request, fn dedup.Func) (dedup.Result, error) {
	return dedup.Result{Outcome: dedup.Processed}, fn(ctx)
}

func TestResolveNameServers(t *testing.T) {
	got, err := resolveNameServers(context.Background(), []string{"localhost:9876", "10.1.2.3:9877", "[::1]:9878"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != "127.0.0.1:9876" || got[1] != "10.1.2.3:9877" || got[2] != "[::1]:9878" {
		t.Errorf("resolved %v", got)
	}
	if _, err := resolveNameServers(context.Background(), []string{"no-such-host.invalid:9876"}); err == nil {
		t.Error("an unresolvable host was accepted")
	}
}

func TestStartFromNames(t *testing.T) {
	var zero StartPosition
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		p    StartPosition
		want string
	}{{zero, "last"}, {StartFromLast, "last"}, {StartFromFirst, "first"}, {StartFromTimestamp(at), "timestamp 2026-01-02T03:04:05Z"}} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.p, got, tc.want)
		}
	}
	if zero != StartFromLast {
		t.Fatal("the zero StartPosition is not StartFromLast")
	}
}
