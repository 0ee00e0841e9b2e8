package idemq

import (
	"time"
)

// PropertyMessageID is the message property that carries the idemq message
// ID, a snowflake ID stamped once when a message is created or written to an
// outbox. The same value is added to the RocketMQ Keys so that operators can
// query by it.
const PropertyMessageID = "IDEMQ_MSG_ID"

// MaxKeyLen is the longest dedup key, in bytes, that idemq accepts. It keeps
// the unique index within the limits of every supported database (MySQL's
// utf8mb4 index prefix is the tightest).
const MaxKeyLen = 191

// Message is a transport-neutral message as a handler sees it.
//
// A handler must treat a Message as read-only except for the fields the
// middleware documents as its own.
type Message struct {
	// ID is the idemq message ID: the snowflake ID from the
	// PropertyMessageID property, or, for messages not produced by idemq,
	// the transport's own message ID (RocketMQ's UNIQ_KEY), which does not
	// survive a re-send of a newly built message.
	ID string
	// Key is the dedup key, set by the Dedup middleware before the
	// handler runs: the business key a key extractor (middleware
	// DedupConfig.KeyFunc) maps the message to, such as
	// "order:123:redpacket", and otherwise ID. A chain without Dedup
	// leaves it empty; DedupKey returns the key either way.
	Key string
	// Group is the consumer group the message is delivered to. Dedup rows
	// are scoped by group: two groups never share them.
	Group string
	// Topic and Tags are the transport's routing fields.
	Topic string
	Tags  string
	// Keys are the transport's message keys (RocketMQ's KEYS property),
	// an index operators query the broker by. They are not the dedup key
	// (see Key): idemq's producer adds the message ID to them.
	Keys []string
	// Body is the payload.
	Body []byte
	// Properties are the user properties of the message.
	Properties map[string]string
	// Attempt is the 1-based delivery count of this message to this group
	// (RocketMQ ReconsumeTimes+1). Middleware that records attempts durably
	// may raise it to the recorded count.
	Attempt int
	// BornAt is when the producer created the message.
	BornAt time.Time
	// Raw is the transport's own message (for RocketMQ a
	// *primitive.MessageExt), or nil.
	Raw any
}

// DedupKey returns the key a message is deduplicated by: Key if set,
// otherwise ID.
func (m *Message) DedupKey() string {
	if m.Key != "" {
		return m.Key
	}
	return m.ID
}

// Property returns the named property, or "" if it is absent.
func (m *Message) Property(name string) string {
	if m.Properties == nil {
		return ""
	}
	return m.Properties[name]
}

// Clone returns a deep copy of m. Raw is copied by reference.
func (m *Message) Clone() *Message {
	c := *m
	if m.Keys != nil {
		c.Keys = append([]string(nil), m.Keys...)
	}
	if m.Body != nil {
		c.Body = append([]byte(nil), m.Body...)
	}
	if m.Properties != nil {
		c.Properties = make(map[string]string, len(m.Properties))
		for k, v := range m.Properties {
			c.Properties[k] = v
		}
	}
	return &c
}
