package producer

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

var clientLoggerOnce sync.Once

// SetClientLogger routes the logs of rocketmq-client-go (its rlog package,
// logrus at Info level on stderr by default) into l, at l's levels: Debug,
// Info, Warning -> Warn, Error, and Fatal -> Error with fatal=true (the
// client's Fatal does not end the process here). Fields become attributes,
// sorted by name.
//
// Call it once per process, before the first Producer or consumer is
// created: the client keeps its logger in an unguarded global, so changing
// it while clients run is a data race. Later calls do nothing. A nil l uses
// slog.Default(). The client's own level filter
// (ROCKETMQ_GO_LOG_LEVEL at this call, rlog.SetLogLevel later) maps to a
// minimum level on top of l's handler; it defaults to Info.
func SetClientLogger(l *slog.Logger) {
	clientLoggerOnce.Do(func() {
		if l == nil {
			l = slog.Default()
		}
		a := &rlogAdapter{log: l}
		a.Level(os.Getenv("ROCKETMQ_GO_LOG_LEVEL"))
		rlog.SetLogger(a)
	})
}

// rlogAdapter implements rlog.Logger on top of slog.
type rlogAdapter struct {
	log *slog.Logger
	min slog.LevelVar
}

// It runs on the client's goroutines, which swallow panics: a panicking
// slog handler is contained here so the client's own work goes on.
func (a *rlogAdapter) emit(level slog.Level, msg string, fields map[string]interface{}, extra ...slog.Attr) {
	defer func() { _ = recover() }()
	if level < a.min.Level() || (msg == "" && len(fields) == 0) {
		return
	}
	ctx := context.Background()
	if !a.log.Enabled(ctx, level) {
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
	a.log.LogAttrs(ctx, level, msg, attrs...)
}

// Debug logs at slog.LevelDebug.
func (a *rlogAdapter) Debug(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelDebug, msg, fields)
}

// Info logs at slog.LevelInfo.
func (a *rlogAdapter) Info(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelInfo, msg, fields)
}

// Warning logs at slog.LevelWarn.
func (a *rlogAdapter) Warning(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelWarn, msg, fields)
}

// Error logs at slog.LevelError.
func (a *rlogAdapter) Error(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelError, msg, fields)
}

// Fatal logs at slog.LevelError with fatal=true. It does not exit.
func (a *rlogAdapter) Fatal(msg string, fields map[string]interface{}) {
	a.emit(slog.LevelError, msg, fields, slog.Bool("fatal", true))
}

// Level sets the minimum level from the client's names: debug, info, warn,
// error, fatal (anything else means info).
func (a *rlogAdapter) Level(level string) {
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
func (a *rlogAdapter) OutputPath(string) error { return nil }
