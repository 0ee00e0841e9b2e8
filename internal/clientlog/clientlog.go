// Package clientlog routes the logs of rocketmq-client-go (its rlog
// package, logrus at Info level on stderr by default) into log/slog, and
// makes them quieter: the client writes dozens of Info lines for a few
// messages (routes, rebalances, heartbeats), so its Info entries are
// logged at slog.LevelDebug unless SetInfoLevel says otherwise; Warning
// and Error keep their levels.
//
// Importing the package installs the adapter (in init, before any client
// can run, because the client keeps its logger in an unguarded global).
// After that the destination and the levels change through atomics, at
// any time.
package clientlog

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// std is the adapter installed in the client.
var std = newAdapter()

func init() { rlog.SetLogger(std) }

// SetLogger sends the client's logs to l; nil means slog.Default() (as it
// is when each entry is written).
func SetLogger(l *slog.Logger) { std.log.Store(l) }

// SetInfoLevel sets the slog level of the client's Info entries. Defaults
// to slog.LevelDebug.
func SetInfoLevel(level slog.Level) { std.info.Set(level) }

// adapter implements rlog.Logger on top of slog.
type adapter struct {
	log  atomic.Pointer[slog.Logger] // nil: slog.Default()
	min  slog.LevelVar               // the client's own level filter
	info slog.LevelVar               // the level of the client's Info entries
}

func newAdapter() *adapter {
	a := &adapter{}
	a.info.Set(slog.LevelDebug)
	a.Level(os.Getenv("ROCKETMQ_GO_LOG_LEVEL"))
	return a
}

// emit logs one entry of the client, which the client logged at
// clientLevel, at level. It runs on the client's goroutines, which
// swallow panics: a panicking slog handler is contained here, so the
// client's own work goes on.
func (a *adapter) emit(clientLevel, level slog.Level, msg string, fields map[string]interface{}, extra ...slog.Attr) {
	defer func() { _ = recover() }()
	if clientLevel < a.min.Level() || (msg == "" && len(fields) == 0) {
		return
	}
	l := a.log.Load()
	if l == nil {
		l = slog.Default()
	}
	ctx := context.Background()
	if !l.Enabled(ctx, level) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys)+len(extra)+1)
	attrs = append(attrs, slog.String("component", "rocketmq-client"))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	attrs = append(attrs, extra...)
	l.LogAttrs(ctx, level, msg, attrs...)
}

// Debug logs at slog.LevelDebug.
func (a *adapter) Debug(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelDebug, slog.LevelDebug, msg, fields)
}

// Info logs at the level SetInfoLevel set (slog.LevelDebug by default).
func (a *adapter) Info(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelInfo, a.info.Level(), msg, fields)
}

// Warning logs at slog.LevelWarn.
func (a *adapter) Warning(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelWarn, slog.LevelWarn, msg, fields)
}

// Error logs at slog.LevelError.
func (a *adapter) Error(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelError, slog.LevelError, msg, fields)
}

// Fatal logs at slog.LevelError with fatal=true. It does not exit.
func (a *adapter) Fatal(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelError, slog.LevelError, msg, fields, slog.Bool("fatal", true))
}

// Level sets the client's own level filter from its names: debug, info,
// warn, error, fatal (anything else means info). rlog.SetLogLevel calls
// it.
func (a *adapter) Level(level string) {
	switch strings.ToLower(level) {
	case "debug":
		a.min.Set(slog.LevelDebug)
	case "warn", "warning":
		a.min.Set(slog.LevelWarn)
	case "error", "fatal":
		a.min.Set(slog.LevelError)
	default:
		a.min.Set(slog.LevelInfo)
	}
}

// OutputPath is ignored: output goes wherever the slog handler writes.
func (a *adapter) OutputPath(string) error { return nil }
