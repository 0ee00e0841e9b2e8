package clientlog

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestClientLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	a := newAdapter()
	a.log.Store(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	a.Level("info")
	a.info.Set(slog.LevelInfo)

	a.Debug("hidden", nil)
	a.Info("route updated", map[string]interface{}{"topic": "orders", "broker": "b1"})
	a.Warning("slow", nil)
	a.Fatal("boom", map[string]interface{}{"underlayError": "x"})
	a.Info("", nil) // the client's empty entries are dropped
	a.Level("error")
	a.Warning("quiet now", nil)
	a.Error("still shown", nil)

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	want := []struct{ level, msg string }{
		{"INFO", "route updated"}, {"WARN", "slow"}, {"ERROR", "boom"}, {"ERROR", "still shown"},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if lines[i]["level"] != w.level || lines[i]["msg"] != w.msg || lines[i]["component"] != "rocketmq-client" {
			t.Errorf("line %d = %v, want %s %q", i, lines[i], w.level, w.msg)
		}
	}
	if lines[0]["topic"] != "orders" || lines[0]["broker"] != "b1" {
		t.Errorf("fields lost: %v", lines[0])
	}
	if lines[2]["fatal"] != true {
		t.Errorf("fatal not marked: %v", lines[2])
	}
	if err := a.OutputPath("/nonexistent/x.log"); err != nil {
		t.Errorf("OutputPath: %v", err)
	}
}

type panicHandler struct{ slog.Handler }

func (panicHandler) Handle(context.Context, slog.Record) error { panic("handler bug") }

// A panicking slog handler must not unwind into the client's goroutines.
func TestClientLogAdapterContainsPanics(t *testing.T) {
	a := newAdapter()
	a.log.Store(slog.New(panicHandler{slog.NewTextHandler(io.Discard, nil)}))
	a.Level("info")
	a.Error("boom", map[string]interface{}{"k": "v"}) // must return
}

// By default the client's Info entries go to slog's Debug: a handler at
// Info (slog's default) sees its warnings and errors only.
func TestClientInfoIsDebugByDefault(t *testing.T) {
	var buf bytes.Buffer
	a := newAdapter()
	a.log.Store(slog.New(slog.NewTextHandler(&buf, nil)))
	a.Level("info")
	a.Info("rebalance", map[string]interface{}{"group": "g"})
	if buf.Len() != 0 {
		t.Fatalf("an Info entry of the client reached an Info handler: %s", buf.String())
	}
	a.Warning("slow", nil)
	if !strings.Contains(buf.String(), "level=WARN") {
		t.Fatalf("a warning was not kept: %q", buf.String())
	}
	buf.Reset()
	a.info.Set(slog.LevelInfo)
	a.Info("rebalance", nil)
	if !strings.Contains(buf.String(), "level=INFO") {
		t.Fatalf("Info entries not back at Info after SetInfoLevel: %q", buf.String())
	}
}
