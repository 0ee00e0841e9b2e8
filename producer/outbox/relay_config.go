package outbox

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/idemq/idemq/internal/token"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// ID names the relay in claimed_by and logs. It must be unique among
	// running relays. Defaults to "<hostname>-<pid>-<random>".
	ID string
	// BatchSize is the most rows claimed at once. Defaults to 100.
	BatchSize int
	// PollInterval is the pause after a claim that found less than a full
	// batch. Defaults to 1 second.
	PollInterval time.Duration
	// Visibility is how long a claim keeps a row from other relays. While
	// a relay sends a batch it extends the claim of the rows it still
	// holds every Visibility/3, and it starts a send only if the claim, as
	// far as it knows (counted from when the claiming or extending
	// statement was sent), outlasts SendTimeout; otherwise it releases the
	// rest of the batch. Rows of a relay that died become due again once
	// the deadline passes. Must exceed SendTimeout. Defaults to 1 minute.
	Visibility time.Duration
	// SendTimeout bounds one Send. Defaults to 15 seconds.
	SendTimeout time.Duration
	// SendWindow is the most rows the relay sends at once: each send
	// waits for the broker's confirmation, so a window of sends in flight
	// keeps the broker busy while earlier sends are confirmed and marked.
	// The loop Start starts keeps one window across its batches (it
	// starts the next batch's rows while the last rows of the previous
	// one are in flight); each RunOnce or SendNow call has a window of its
	// own for its one batch. Ordered mode claims at most one row per
	// sharding key at a time, so a window never reorders a key. 1 sends
	// one row after another. Defaults to DefaultSendWindow (8).
	SendWindow int
	// MaxAttempts is the number of failed sends after which a row is
	// failed. Defaults to 20 (about an hour with the default backoff).
	MaxAttempts int
	// Backoff spaces the retries of a row.
	Backoff Backoff
	// Retention is how long sent rows are kept before the relay's loop
	// (see Relay.Start) deletes them; negative keeps them forever.
	// Defaults to 7 days.
	Retention time.Duration
	// CleanupInterval is how often the relay's loop deletes expired sent
	// rows. Defaults to 10 minutes.
	CleanupInterval time.Duration
	// CleanupBatch is the most rows one cleanup statement deletes. Defaults
	// to 1000.
	CleanupBatch int

	// hooks let tests watch the relay's events.
	hooks relayHooks
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), token.Short(3))
		if len(c.ID) > maxRelayIDLen {
			c.ID = c.ID[len(c.ID)-maxRelayIDLen:]
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.Visibility == 0 {
		c.Visibility = time.Minute
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 15 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = 10 * time.Minute
	}
	if c.CleanupBatch == 0 {
		c.CleanupBatch = 1000
	}
	if c.SendWindow == 0 {
		c.SendWindow = DefaultSendWindow
	}
	c.Backoff = c.Backoff.withDefaults()
	return c
}

const maxRelayIDLen = 160

// DefaultSendWindow is the default of RelayConfig.SendWindow.
const DefaultSendWindow = 8

// MaxSendWindow bounds RelayConfig.SendWindow.
const MaxSendWindow = 256

func (c RelayConfig) validate() error {
	switch {
	case len(c.ID) > maxRelayIDLen:
		return fmt.Errorf("outbox: relay ID longer than %d bytes", maxRelayIDLen)
	case c.BatchSize < 1:
		return fmt.Errorf("outbox: BatchSize %d is below 1", c.BatchSize)
	case c.PollInterval < 0:
		return errors.New("outbox: negative PollInterval")
	case c.SendTimeout < 0:
		return errors.New("outbox: negative SendTimeout")
	case c.Visibility <= c.SendTimeout:
		return fmt.Errorf("outbox: Visibility %s must exceed SendTimeout %s", c.Visibility, c.SendTimeout)
	case c.MaxAttempts < 1:
		return fmt.Errorf("outbox: MaxAttempts %d is below 1", c.MaxAttempts)
	case c.CleanupInterval < 0:
		return errors.New("outbox: negative CleanupInterval")
	case c.CleanupBatch < 1:
		return fmt.Errorf("outbox: CleanupBatch %d is below 1", c.CleanupBatch)
	case c.SendWindow < 1 || c.SendWindow > MaxSendWindow:
		return fmt.Errorf("outbox: SendWindow %d is not within 1 to %d", c.SendWindow, MaxSendWindow)
	}
	return c.Backoff.validate()
}
