package rmqtest

import (
	"bufio"
	"bytes"
	"maps"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

const fuzzMaxFrame = 1 << 16

func FuzzDecodeFrame(f *testing.F) {
	for _, c := range []*command{
		{Code: codeGetRouteInfoByTopic, Language: "GO", Opaque: 1, ExtFields: map[string]string{"topic": "t"}},
		{Code: codeSendMessage, Opaque: 2, ExtFields: sendExt("pg", "t", 0, "TAGS\x01a\x02"), Body: []byte("body")},
		{Code: 0, Opaque: 3, Flag: flagResponse, Remark: "ok"},
	} {
		frame, err := encodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add(rawFrame(`{"code":10,"opaque":7,"extFields":{"queueId":3}}`, nil, -1, -1, 0))
	f.Add(rawFrame(`{"code":105}`, nil, 10, 500, 0))
	f.Add(rawFrame(`{"code":105}`, nil, -1, -1, 1))
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0x00, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, n, err := decodeFrame(data, fuzzMaxFrame)
		if err == nil {
			if n < 8 || n > len(data) {
				t.Fatalf("consumed %d of %d", n, len(data))
			}
			// A decoded command re-encodes and decodes to the same thing.
			frame, err := encodeCommand(c)
			if err != nil {
				return // e.g. invalid UTF-8 is replaced, still fine; only a header too long fails
			}
			c2, _, err := decodeFrame(frame, len(frame)+8)
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			if c2.Code != c.Code || c2.Opaque != c.Opaque || c2.Flag != c.Flag || !bytes.Equal(c2.Body, c.Body) {
				t.Fatalf("round trip changed %+v to %+v", c, c2)
			}
		}
		// The streaming reader must agree with decodeFrame on the first
		// frame and never buffer more than the limit.
		rc, rerr := readCommand(bufio.NewReader(bytes.NewReader(data)), fuzzMaxFrame)
		if err == nil && (rerr != nil || rc.Opaque != c.Opaque || !bytes.Equal(rc.Body, c.Body)) {
			t.Fatalf("readCommand disagrees: %v vs %+v", rerr, c)
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	m1 := primitive.NewMessage("t", []byte("one"))
	m1.WithTag("a")
	m2 := primitive.NewMessage("t", nil)
	f.Add(producer.MarshalMessageBatch(m1, m2))
	f.Add(producer.MarshalMessageBatch(m1)[:10])
	f.Add([]byte{0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		items, err := decodeBatch(data)
		if err != nil {
			return
		}
		total := 0
		for _, it := range items {
			total += 22 + len(it.Body)
		}
		if total > len(data) {
			t.Fatalf("items claim %d bytes of %d", total, len(data))
		}
		// What the client's marshaller writes for the decoded items decodes
		// to the same items.
		var msgs []*primitive.Message
		for _, it := range items {
			m := primitive.NewMessage("t", it.Body)
			m.Flag = it.Flag
			m.WithProperties(maps.Clone(it.Props))
			msgs = append(msgs, m)
		}
		again, err := decodeBatch(producer.MarshalMessageBatch(msgs...))
		if err != nil || len(again) != len(items) {
			t.Fatalf("re-decode: %d items, %v", len(again), err)
		}
	})
}

func FuzzParseProperties(f *testing.F) {
	f.Add("TAGS\x01a\x02KEYS\x01k1 k2\x02")
	f.Add("\x01\x02\x01\x01\x02")
	f.Add("noseparator")
	f.Fuzz(func(t *testing.T, s string) {
		props := parseProperties(s)
		for k, v := range props {
			if bytes.ContainsAny([]byte(k), "\x02") || bytes.ContainsAny([]byte(v), "\x01\x02") {
				t.Fatalf("separator kept in %q=%q", k, v)
			}
		}
		// Our encoding is understood by the client's parser.
		var m primitive.Message
		m.UnmarshalProperties([]byte(formatProperties(props)))
		got := m.GetProperties()
		for k, v := range props {
			if k != "" && v != "" && got[k] != v {
				t.Fatalf("client parsed %q as %q, want %q", k, got[k], v)
			}
		}
	})
}

func FuzzDecodeStored(f *testing.F) {
	m := &storedMessage{Topic: "t", QueueID: 1, QueueOffset: 2, CommitOffset: 300, Body: []byte("b"),
		Props: map[string]string{"TAGS": "x"}, BornHost: [4]byte{127, 0, 0, 1}, BornPort: 5}
	enc := encodeStored(nil, m, [4]byte{127, 0, 0, 1}, 9876)
	f.Add(enc)
	f.Add(enc[:40])
	f.Add(append(enc, enc...))
	f.Fuzz(func(t *testing.T, data []byte) {
		sm, n, err := decodeStored(data)
		if err != nil {
			return
		}
		if n > len(data) {
			t.Fatalf("consumed %d of %d", n, len(data))
		}
		if validProperties(sm.Props) != nil {
			return
		}
		// Our encoding of what we decoded is what the client decodes.
		again := encodeStored(nil, sm, [4]byte{127, 0, 0, 1}, 9876)
		exts := primitive.DecodeMessage(again)
		if len(exts) != 1 || exts[0].Topic != sm.Topic || exts[0].QueueOffset != sm.QueueOffset ||
			(sm.SysFlag&sysFlagCompressed == 0 && !bytes.Equal(exts[0].Body, sm.Body)) {
			t.Fatalf("client decoded %v from %+v", exts, sm)
		}
	})
}

func TestStoredMessageMatchesClientDecoder(t *testing.T) {
	m := &storedMessage{
		Topic: "orders", QueueID: 3, QueueOffset: 17, CommitOffset: 4096, Flag: 5, SysFlag: 0,
		BornTimestamp: 1700000000000, BornHost: [4]byte{10, 0, 0, 7}, BornPort: 5555,
		StoreTimestamp: 1700000000123, ReconsumeTimes: 2, PreparedOffset: 99,
		Body:  []byte("hello"),
		Props: map[string]string{"TAGS": "t", "KEYS": "a b", "UNIQ_KEY": "U"},
	}
	enc := encodeStored(nil, m, [4]byte{127, 0, 0, 1}, 10911)
	got := primitive.DecodeMessage(enc)
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	e := got[0]
	if e.Topic != "orders" || e.Queue.QueueId != 3 || e.QueueOffset != 17 || e.CommitLogOffset != 4096 ||
		e.Flag != 5 || e.BornTimestamp != 1700000000000 || e.BornHost != "10.0.0.7:5555" ||
		e.StoreTimestamp != 1700000000123 || e.StoreHost != "127.0.0.1:10911" || e.ReconsumeTimes != 2 ||
		e.PreparedTransactionOffset != 99 || string(e.Body) != "hello" || e.GetTags() != "t" ||
		e.GetKeys() != "a b" || e.MsgId != "U" || e.StoreSize != int32(len(enc)) ||
		e.OffsetMsgId != primitive.CreateMessageId([]byte{127, 0, 0, 1}, 10911, 4096) {
		t.Fatalf("decoded %v", e)
	}
	back, n, err := decodeStored(enc)
	if err != nil || n != len(enc) || back.Topic != m.Topic || back.ReconsumeTimes != 2 || back.Props["KEYS"] != "a b" {
		t.Fatalf("decodeStored: %+v %d %v", back, n, err)
	}
}
