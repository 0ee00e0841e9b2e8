package producer

import (
	"log/slog"

	"github.com/idemq/idemq/internal/clientlog"
)

// SetClientLogger routes the logs of rocketmq-client-go (its rlog
// package) into l: its Debug, Warning and Error entries at those levels,
// Fatal at Error with fatal=true (the client's Fatal does not end the
// process here), and its Info entries at slog.LevelDebug: the client
// writes dozens of them for a few messages (routes, rebalances,
// heartbeats). SetClientInfoLevel(slog.LevelInfo) brings them back to
// Info. Fields become attributes, sorted by name.
//
// Without a call, or with a nil l, the entries go to slog.Default() (as
// it is when each entry is written), at the same levels: importing this
// package replaces the client's own logger (logrus on stderr). It may be
// called at any time; the last call wins. The client's own level filter
// (ROCKETMQ_GO_LOG_LEVEL at start, rlog.SetLogLevel later; info by
// default) applies first.
func SetClientLogger(l *slog.Logger) { clientlog.SetLogger(l) }

// SetClientInfoLevel sets the slog level of the client's Info entries
// (see SetClientLogger). Defaults to slog.LevelDebug; pass slog.LevelInfo
// to see them with an Info handler.
func SetClientInfoLevel(level slog.Level) { clientlog.SetInfoLevel(level) }
