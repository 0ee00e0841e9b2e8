package rmqtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMalformedFramesCloseConnection(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"ok"}})
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"negative length", rawFrame(`{"code":105}`, nil, -100, -1, 0)[0:4:4]},
		{"length below minimum", []byte{0, 0, 0, 2, 0, 0}},
		{"header longer than frame", rawFrame(`{"code":105,"opaque":1}`, nil, 10, 500, 0)},
		{"header over the header limit", rawFrame(`{}`, nil, 8<<20, 2<<20, 0)},
		{"not JSON", rawFrame(`not json at all`, nil, -1, -1, 0)},
		{"binary header serialization", rawFrame(`{"code":105,"opaque":1}`, nil, -1, -1, 1)},
		{"truncated", rawFrame(`{"code":105,"opaque":1}`, nil, -1, -1, 0)[:12]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := dialWire(t, b)
			if tc.name == "negative length" {
				var neg [4]byte
				binary.BigEndian.PutUint32(neg[:], uint32(0xFFFFFF00))
				tc.frame = neg[:]
			}
			w.writeRaw(tc.frame)
			if tc.name == "truncated" {
				_ = w.nc.(interface{ CloseWrite() error }).CloseWrite()
			}
			w.expectClosed(5 * time.Second)
		})
	}
	// The broker still serves new connections.
	w := dialWire(t, b)
	if r := w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "ok"}, nil); r.Code != respSuccess {
		t.Fatalf("after malformed frames: %d", r.Code)
	}
}

func TestMalformedHeaderWithOpaqueGetsErrorReply(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"ok"}})
	w := dialWire(t, b)
	op, ch := int32(77), make(chan *command, 1)
	w.mu.Lock()
	w.waiting[op] = ch
	w.mu.Unlock()
	// extFields values must be strings.
	w.writeRaw(rawFrame(`{"code":10,"opaque":77,"extFields":{"queueId":3}}`, nil, -1, -1, 0))
	r := w.wait(ch, 5*time.Second)
	if r.Code != respSystemError || !strings.Contains(r.Remark, "malformed") {
		t.Fatalf("reply %d %q", r.Code, r.Remark)
	}
	// The connection is still usable.
	if r := w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "ok"}, nil); r.Code != respSuccess {
		t.Fatalf("after bad header: %d", r.Code)
	}
}

func TestOversizedFrameIsSkippedAndRefused(t *testing.T) {
	b := NewTest(t, Config{MaxMessageSize: 1024, Topics: []string{"big"}})
	w := dialWire(t, b)
	// A frame beyond MaxMessageSize + headroom: header decoded, body
	// skipped without buffering, MESSAGE_ILLEGAL returned.
	op, ch := int32(5), make(chan *command, 1)
	w.mu.Lock()
	w.waiting[op] = ch
	w.mu.Unlock()
	huge := bytes.Repeat([]byte("x"), 1024+frameHeadroom+10)
	w.writeRaw(rawFrame(`{"code":10,"opaque":5,"extFields":{"topic":"big"}}`, huge, -1, -1, 0))
	if r := w.wait(ch, 5*time.Second); r.Code != respMessageIllegal {
		t.Fatalf("oversized frame: %d %q", r.Code, r.Remark)
	}
	// A body just over the message limit is read and refused.
	if r := w.call(codeSendMessage, sendExt("pg", "big", 0, ""), bytes.Repeat([]byte("y"), 1025)); r.Code != respMessageIllegal {
		t.Fatalf("oversized body: %d %q", r.Code, r.Remark)
	}
	if r := w.call(codeSendMessage, sendExt("pg", "big", 0, ""), bytes.Repeat([]byte("y"), 1024)); r.Code != respSuccess {
		t.Fatalf("body at the limit: %d %q", r.Code, r.Remark)
	}
	// Properties too long for the stored layout.
	long := "K\x01" + strings.Repeat("v", 40000) + "\x02"
	if r := w.call(codeSendMessage, sendExt("pg", "big", 0, long), []byte("z")); r.Code != respMessageIllegal {
		t.Fatalf("long properties: %d", r.Code)
	}
	if r := w.call(codeSendMessage, sendExt("pg", "bad topic", 0, ""), []byte("z")); r.Code != respMessageIllegal {
		t.Fatalf("bad topic: %d", r.Code)
	}
	if r := w.call(codeSendMessage, sendExt("pg", "big", 99, ""), []byte("z")); r.Code != respSystemError {
		t.Fatalf("bad queue: %d", r.Code)
	}
	if n := len(b.Messages("big")); n != 1 {
		t.Fatalf("%d stored, want 1", n)
	}
	if s := b.Stats(); s.SendsRefused != 4 {
		t.Fatalf("refused %d", s.SendsRefused)
	}
}

func TestReadCommandLimits(t *testing.T) {
	frame, err := encodeCommand(&command{Code: 1, Opaque: 9, Body: []byte("abc")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := readCommand(bufio.NewReader(bytes.NewReader(frame)), 1<<20)
	if err != nil || c.Code != 1 || c.Opaque != 9 || string(c.Body) != "abc" {
		t.Fatalf("round trip: %+v %v", c, err)
	}
	c2, n, err := decodeFrame(frame, 1<<20)
	if err != nil || n != len(frame) || c2.Opaque != 9 || string(c2.Body) != "abc" {
		t.Fatalf("decodeFrame: %+v %d %v", c2, n, err)
	}
	if _, _, err := decodeFrame(frame, 8); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("decodeFrame over limit: %v", err)
	}
	_, err = readCommand(bufio.NewReader(bytes.NewReader(frame)), 8)
	var fe *frameError
	if !errors.As(err, &fe) || !fe.tooLarge || !fe.known || fe.opaque != 9 {
		t.Fatalf("readCommand over limit: %v", err)
	}
}
