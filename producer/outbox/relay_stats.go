package outbox

// RelayStats are a relay's counters since it was created.
type RelayStats struct {
	// Claimed counts rows claimed.
	Claimed int64
	// Sent counts rows confirmed by the broker and marked sent.
	Sent int64
	// Failures counts failed sends (retryable or not).
	Failures int64
	// Failed counts rows moved to failed (permanent error or attempts
	// exhausted).
	Failed int64
	// LostClaims counts rows sent after another relay took over the claim.
	LostClaims int64
	// Released counts claimed rows handed back unsent (shutdown, or the
	// visibility deadline drawing near).
	Released int64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Claimed:    r.claimed.Load(),
		Sent:       r.sent.Load(),
		Failures:   r.failures.Load(),
		Failed:     r.failed.Load(),
		LostClaims: r.lost.Load(),
		Released:   r.released.Load(),
	}
}

// relayHooks let tests watch a relay's events. Every field is optional.
// Claimed and Failed run on the goroutine that claims; Sent and LostClaim
// on the goroutine that marks the batch's confirmed rows, which may be
// concurrent with them. Users watch a relay through Stats, the Prometheus
// collector (Relay.RegisterMetrics) and its slog logs.
//
// Hooks are called from the goroutines that send a batch (up to
// SendWindow at once), so they may run concurrently.
type relayHooks struct {
	// Claimed is called after the relay claimed rows, with their message
	// IDs, before it sends them.
	Claimed func(relayID string, messageIDs []string)
	// Sent is called after a row was confirmed and marked sent.
	Sent func(relayID, messageID, brokerMessageID string)
	// Failed is called after a failed send was recorded. attempts is the
	// row's new attempt count; final is set when the row is now failed.
	Failed func(relayID, messageID string, err error, attempts int, final bool)
	// LostClaim is called when a row was sent but the relay no longer held
	// its claim.
	LostClaim func(relayID, messageID string)
	// MarkStatement is called after each statement that marked confirmed
	// rows sent, with the number of rows it was given.
	MarkStatement func(relayID string, rows int)
}
