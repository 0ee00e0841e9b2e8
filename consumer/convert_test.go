package consumer

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
)

func newExt(topic string, body []byte, props map[string]string) *primitive.MessageExt {
	ext := &primitive.MessageExt{}
	ext.Topic = topic
	ext.Body = body
	for k, v := range props {
		ext.WithProperty(k, v)
	}
	ext.MsgId = props[primitive.PropertyUniqueClientMessageIdKeyIndex]
	return ext
}

func TestToMessage(t *testing.T) {
	born := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ext := newExt("orders", []byte(`{"order":"42"}`), map[string]string{
		idemq.PropertyMessageID: "7300000000000000042",
		"UNIQ_KEY":              "AC11000100002A9F0000000000000001",
		"TAGS":                  "paid",
		"KEYS":                  "order-42  7300000000000000042",
		"tenant":                "acme",
		"CONSUME_START_TIME":    "1700000000000",
		"MIN_OFFSET":            "0",
		"MAX_OFFSET":            "9",
		"DELAY":                 "3",
	})
	ext.ReconsumeTimes = 2
	ext.BornTimestamp = born.UnixMilli()

	msg := ToMessage(ext, "rewards")
	if msg.ID != "7300000000000000042" {
		t.Errorf("ID = %q, want the idemq property", msg.ID)
	}
	if msg.Key != "" || msg.DedupKey() != msg.ID {
		t.Errorf("Key = %q, DedupKey = %q: want no business key", msg.Key, msg.DedupKey())
	}
	if msg.Group != "rewards" || msg.Topic != "orders" || msg.Tags != "paid" {
		t.Errorf("group/topic/tags = %q/%q/%q", msg.Group, msg.Topic, msg.Tags)
	}
	if want := []string{"order-42", "7300000000000000042"}; !slices.Equal(msg.Keys, want) {
		t.Errorf("Keys = %q, want %q", msg.Keys, want)
	}
	if string(msg.Body) != `{"order":"42"}` {
		t.Errorf("Body = %q", msg.Body)
	}
	wantProps := map[string]string{idemq.PropertyMessageID: "7300000000000000042", "tenant": "acme"}
	if !maps.Equal(msg.Properties, wantProps) {
		t.Errorf("Properties = %v, want %v (system properties dropped)", msg.Properties, wantProps)
	}
	if msg.Attempt != 3 {
		t.Errorf("Attempt = %d, want ReconsumeTimes+1 = 3", msg.Attempt)
	}
	if !msg.BornAt.Equal(born) {
		t.Errorf("BornAt = %v, want %v", msg.BornAt, born)
	}
	if msg.Raw != ext {
		t.Errorf("Raw is not the MessageExt")
	}
	msg.Body[0] = 'X'
	if ext.Body[0] != '{' {
		t.Errorf("the message shares its body with the client's MessageExt")
	}
}

func TestToMessageFallbacks(t *testing.T) {
	tests := []struct {
		name      string
		topic     string
		props     map[string]string
		msgID     string
		reconsume int32
		wantID    string
		wantTopic string
		wantTry   int
	}{
		{
			name:      "no idemq ID: RocketMQ MsgId",
			topic:     "orders",
			props:     map[string]string{"UNIQ_KEY": "AC1100010000"},
			wantID:    "AC1100010000",
			wantTopic: "orders",
			wantTry:   1,
		},
		{
			name:      "no UNIQ_KEY: offset message ID the client put in MsgId",
			topic:     "orders",
			msgID:     "0A0000010000277100000000000000FF",
			wantID:    "0A0000010000277100000000000000FF",
			wantTopic: "orders",
			wantTry:   1,
		},
		{
			name:      "retry copy not restored by the client",
			topic:     "%RETRY%rewards",
			props:     map[string]string{"RETRY_TOPIC": "orders", idemq.PropertyMessageID: "7"},
			reconsume: 4,
			wantID:    "7",
			wantTopic: "orders",
			wantTry:   5,
		},
		{
			name:      "retry topic without RETRY_TOPIC stays as is",
			topic:     "%RETRY%rewards",
			props:     map[string]string{idemq.PropertyMessageID: "8"},
			wantID:    "8",
			wantTopic: "%RETRY%rewards",
			wantTry:   1,
		},
		{
			name:      "negative reconsume times",
			topic:     "orders",
			props:     map[string]string{idemq.PropertyMessageID: "9"},
			reconsume: -3,
			wantID:    "9",
			wantTopic: "orders",
			wantTry:   1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext := newExt(tt.topic, nil, tt.props)
			if tt.msgID != "" {
				ext.MsgId = tt.msgID
			}
			ext.ReconsumeTimes = tt.reconsume
			msg := ToMessage(ext, "rewards")
			if msg.ID != tt.wantID || msg.Topic != tt.wantTopic || msg.Attempt != tt.wantTry {
				t.Errorf("ID/Topic/Attempt = %q/%q/%d, want %q/%q/%d",
					msg.ID, msg.Topic, msg.Attempt, tt.wantID, tt.wantTopic, tt.wantTry)
			}
			if !msg.BornAt.IsZero() || msg.Keys != nil || msg.Body != nil {
				t.Errorf("empty fields filled: born %v keys %q body %q", msg.BornAt, msg.Keys, msg.Body)
			}
		})
	}
	if ToMessage(nil, "g") != nil {
		t.Error("ToMessage(nil) != nil")
	}
}

func TestIsSystemProperty(t *testing.T) {
	for _, k := range []string{"UNIQ_KEY", "TAGS", "KEYS", "DELAY", "RETRY_TOPIC", "TRAN_MSG", "CONSUME_START_TIME"} {
		if !IsSystemProperty(k) {
			t.Errorf("IsSystemProperty(%q) = false", k)
		}
	}
	for _, k := range []string{idemq.PropertyMessageID, "tenant", "traceparent"} {
		if IsSystemProperty(k) {
			t.Errorf("IsSystemProperty(%q) = true", k)
		}
	}
}

// FuzzConvert feeds ToMessage messages decoded from arbitrary property
// strings, bodies, topics and reconsume counts. It must never panic, and
// its invariants must hold for every input.
func FuzzConvert(f *testing.F) {
	f.Add("IDEMQ_MSG_ID\x017\x02KEYS\x01a b\x02TAGS\x01t\x02", []byte("body"), "orders", int32(0), int64(1700000000000))
	f.Add("RETRY_TOPIC\x01orders\x02UNIQ_KEY\x01AB\x02", []byte{}, "%RETRY%g", int32(5), int64(0))
	f.Add("\x01\x02\x01\x01\x02\x02", []byte(nil), "", int32(-1), int64(-5))
	f.Add("KEYS\x01   \x02x\x01\x02\x01y\x02", []byte{0, 1, 2}, "%RETRY%", int32(2147483647), int64(9223372036854775807))
	f.Fuzz(func(t *testing.T, props string, body []byte, topic string, reconsume int32, born int64) {
		ext := &primitive.MessageExt{}
		ext.Topic = topic
		ext.Body = body
		ext.ReconsumeTimes = reconsume
		ext.BornTimestamp = born
		ext.UnmarshalProperties([]byte(props))
		ext.MsgId = ext.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
		all := ext.GetProperties()

		msg := ToMessage(ext, "g")
		if msg == nil {
			t.Fatal("nil message")
		}
		if msg.Attempt < 1 {
			t.Fatalf("Attempt %d < 1", msg.Attempt)
		}
		if id := all[idemq.PropertyMessageID]; id != "" && msg.ID != id {
			t.Fatalf("ID %q, want the property %q", msg.ID, id)
		}
		if !bytes.Equal(msg.Body, body) {
			t.Fatalf("Body %q, want %q", msg.Body, body)
		}
		for k, v := range msg.Properties {
			if IsSystemProperty(k) {
				t.Fatalf("system property %q kept", k)
			}
			if all[k] != v {
				t.Fatalf("property %q = %q, want %q", k, v, all[k])
			}
		}
		for _, k := range msg.Keys {
			if k == "" || strings.Contains(k, " ") {
				t.Fatalf("bad key %q in %q", k, msg.Keys)
			}
		}
		if msg.Group != "g" || msg.Raw != ext {
			t.Fatalf("group %q raw %v", msg.Group, msg.Raw)
		}
	})
}
