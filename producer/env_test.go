package producer

import "log/slog"

var quietLog = slog.New(slog.DiscardHandler)

// failingIDs is an ID source that fails with err.
type failingIDs struct{ err error }

func (f failingIDs) NextID() (string, error) { return "", f.err }
