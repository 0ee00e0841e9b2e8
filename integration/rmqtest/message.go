package rmqtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// This file holds the message encodings: the stored-message layout of pull
// responses, the batch body of SEND_BATCH_MESSAGE, and message properties.

// Message property names the broker reads or writes.
const (
	propTags              = "TAGS"
	propKeys              = "KEYS"
	propWait              = "WAIT"
	propDelayLevel        = "DELAY"
	propRetryTopic        = "RETRY_TOPIC"
	propRealTopic         = "REAL_TOPIC"
	propRealQueueID       = "REAL_QID"
	propTranPrepared      = "TRAN_MSG"
	propProducerGroup     = "PGROUP"
	propOriginMessageID   = "ORIGIN_MESSAGE_ID"
	propUniqKey           = "UNIQ_KEY"
	propTranCheckTimes    = "TRANSACTION_CHECK_TIMES"
	propTransactionID     = "__transactionId__"
	propMaxReconsumeTimes = "MAX_RECONSUME_TIMES"
)

// System flag bits of a stored message.
const (
	sysFlagCompressed   int32 = 0x1
	sysFlagTranMask     int32 = 0x3 << 2
	sysFlagTranPrepared int32 = 0x1 << 2
	sysFlagTranCommit   int32 = 0x2 << 2
	sysFlagBornHostV6   int32 = 0x1 << 4
	sysFlagStoreHostV6  int32 = 0x1 << 5
)

// messageMagic is the magic code of a stored message in a RocketMQ 4.x
// commit log.
const messageMagic = int32(-626843481)

// Limits the stored-message layout imposes.
const (
	// maxTopicLen is the longest topic name the layout can carry (one
	// length byte); RocketMQ itself allows 127 characters.
	maxTopicLen = 127
	// maxPropertiesLen is the longest encoded property string (a signed
	// 16-bit length on the client side).
	maxPropertiesLen = 32767
)

const (
	propNameValueSep = '\x01'
	propSep          = '\x02'
)

// errBadBatch reports a malformed SEND_BATCH_MESSAGE body.
var errBadBatch = errors.New("rmqtest: malformed batch body")

// storedMessage is one message as the broker holds it.
type storedMessage struct {
	Topic          string
	QueueID        int32
	QueueOffset    int64
	CommitOffset   int64
	Flag           int32
	SysFlag        int32
	BornTimestamp  int64
	BornHost       [4]byte
	BornPort       int32
	StoreTimestamp int64
	ReconsumeTimes int32
	PreparedOffset int64
	// Body is kept as the producer sent it (zlib-compressed if SysFlag has
	// sysFlagCompressed); the client inflates it.
	Body  []byte
	Props map[string]string
}

// clone returns a deep copy of m.
func (m *storedMessage) clone() *storedMessage {
	c := *m
	c.Body = append([]byte(nil), m.Body...)
	c.Props = make(map[string]string, len(m.Props))
	for k, v := range m.Props {
		c.Props[k] = v
	}
	return &c
}

// encodedSize returns the length of m's stored form.
func (m *storedMessage) encodedSize(props string) int {
	return 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + len(m.Body) + 1 + len(m.Topic) + 2 + len(props)
}

// encodeStored appends m's stored form to dst. storeIP and storePort name
// the broker; the client derives OffsetMsgId and StoreHost from them.
func encodeStored(dst []byte, m *storedMessage, storeIP [4]byte, storePort int32) []byte {
	props := formatProperties(m.Props)
	size := m.encodedSize(props)
	b := make([]byte, size)
	be := binary.BigEndian
	p := 0
	put32 := func(v int32) { be.PutUint32(b[p:], uint32(v)); p += 4 }
	put64 := func(v int64) { be.PutUint64(b[p:], uint64(v)); p += 8 }
	put32(int32(size))
	put32(messageMagic)
	put32(int32(crc32.ChecksumIEEE(m.Body) & 0x7FFFFFFF))
	put32(m.QueueID)
	put32(m.Flag)
	put64(m.QueueOffset)
	put64(m.CommitOffset)
	put32(m.SysFlag &^ (sysFlagBornHostV6 | sysFlagStoreHostV6))
	put64(m.BornTimestamp)
	p += copy(b[p:], m.BornHost[:])
	put32(m.BornPort)
	put64(m.StoreTimestamp)
	p += copy(b[p:], storeIP[:])
	put32(storePort)
	put32(m.ReconsumeTimes)
	put64(m.PreparedOffset)
	put32(int32(len(m.Body)))
	p += copy(b[p:], m.Body)
	b[p] = byte(len(m.Topic))
	p++
	p += copy(b[p:], m.Topic)
	be.PutUint16(b[p:], uint16(len(props)))
	p += 2
	copy(b[p:], props)
	return append(dst, b...)
}

// decodeStored parses one stored message from the front of b and returns it
// with the number of bytes used. It is the inverse of encodeStored.
func decodeStored(b []byte) (*storedMessage, int, error) {
	be := binary.BigEndian
	const fixed = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4
	if len(b) < fixed {
		return nil, 0, fmt.Errorf("rmqtest: stored message: %d bytes, want at least %d", len(b), fixed)
	}
	size := int64(int32(be.Uint32(b)))
	if size < fixed+1+2 || size > int64(len(b)) {
		return nil, 0, fmt.Errorf("rmqtest: stored message: bad total size %d", size)
	}
	if magic := int32(be.Uint32(b[4:])); magic != messageMagic {
		return nil, 0, fmt.Errorf("rmqtest: stored message: bad magic %d", magic)
	}
	m := &storedMessage{}
	p := 12
	get32 := func() int32 { v := int32(be.Uint32(b[p:])); p += 4; return v }
	get64 := func() int64 { v := int64(be.Uint64(b[p:])); p += 8; return v }
	m.QueueID = get32()
	m.Flag = get32()
	m.QueueOffset = get64()
	m.CommitOffset = get64()
	m.SysFlag = get32()
	if m.SysFlag&(sysFlagBornHostV6|sysFlagStoreHostV6) != 0 {
		return nil, 0, errors.New("rmqtest: stored message: IPv6 hosts not supported")
	}
	m.BornTimestamp = get64()
	copy(m.BornHost[:], b[p:p+4])
	p += 4
	m.BornPort = get32()
	m.StoreTimestamp = get64()
	p += 8 // store host
	m.ReconsumeTimes = get32()
	m.PreparedOffset = get64()
	bodyLen := int64(get32())
	rest := size - int64(p)
	if bodyLen < 0 || bodyLen > rest-3 {
		return nil, 0, fmt.Errorf("rmqtest: stored message: bad body length %d", bodyLen)
	}
	m.Body = append([]byte(nil), b[p:p+int(bodyLen)]...)
	p += int(bodyLen)
	topicLen := int(b[p])
	p++
	if int64(p+topicLen+2) > size {
		return nil, 0, fmt.Errorf("rmqtest: stored message: bad topic length %d", topicLen)
	}
	m.Topic = string(b[p : p+topicLen])
	p += topicLen
	propsLen := int(be.Uint16(b[p:]))
	p += 2
	if int64(p+propsLen) != size {
		return nil, 0, fmt.Errorf("rmqtest: stored message: properties length %d does not fill size %d", propsLen, size)
	}
	m.Props = parseProperties(string(b[p : p+propsLen]))
	return m, int(size), nil
}

// batchItem is one message of a batch send.
type batchItem struct {
	Flag  int32
	Body  []byte
	Props map[string]string
}

// decodeBatch parses a SEND_BATCH_MESSAGE body: a run of
//
//	totalSize i32, magic i32, bodyCRC i32, flag i32,
//	bodyLen i32, body, propsLen u16, props
//
// as the client's producer.MarshalMessageBatch writes it.
func decodeBatch(b []byte) ([]batchItem, error) {
	be := binary.BigEndian
	var items []batchItem
	for len(b) > 0 {
		const fixed = 4 + 4 + 4 + 4 + 4
		if len(b) < fixed+2 {
			return nil, fmt.Errorf("%w: %d trailing bytes", errBadBatch, len(b))
		}
		size := int64(int32(be.Uint32(b)))
		if size < fixed+2 || size > int64(len(b)) {
			return nil, fmt.Errorf("%w: bad total size %d", errBadBatch, size)
		}
		flag := int32(be.Uint32(b[12:]))
		bodyLen := int64(int32(be.Uint32(b[16:])))
		if bodyLen < 0 || fixed+bodyLen+2 > size {
			return nil, fmt.Errorf("%w: bad body length %d", errBadBatch, bodyLen)
		}
		p := fixed + int(bodyLen)
		body := append([]byte(nil), b[fixed:p]...)
		propsLen := int64(be.Uint16(b[p:]))
		p += 2
		if int64(p)+propsLen != size {
			return nil, fmt.Errorf("%w: properties length %d does not fill size %d", errBadBatch, propsLen, size)
		}
		items = append(items, batchItem{
			Flag:  flag,
			Body:  body,
			Props: parseProperties(string(b[p : p+int(propsLen)])),
		})
		b = b[size:]
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: empty", errBadBatch)
	}
	return items, nil
}

// parseProperties decodes "k\x01v\x02k\x01v\x02". Items that are not exactly
// one name and one value are skipped, as the client does.
func parseProperties(s string) map[string]string {
	props := make(map[string]string)
	for item := range strings.SplitSeq(s, string(propSep)) {
		name, value, ok := strings.Cut(item, string(propNameValueSep))
		if !ok || strings.IndexByte(value, propNameValueSep) >= 0 {
			continue
		}
		props[name] = value
	}
	return props
}

// formatProperties encodes props in sorted key order, skipping empty names
// and values as the client does.
func formatProperties(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k, v := range props {
		if k != "" && v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		sb.WriteString(k)
		sb.WriteByte(propNameValueSep)
		sb.WriteString(props[k])
		sb.WriteByte(propSep)
	}
	return sb.String()
}

// validProperties reports whether props fit the stored-message layout and
// round-trip through formatProperties and parseProperties.
func validProperties(props map[string]string) error {
	s := formatProperties(props)
	if len(s) > maxPropertiesLen {
		return fmt.Errorf("properties are %d bytes, limit %d", len(s), maxPropertiesLen)
	}
	for k, v := range props {
		if strings.ContainsAny(k, "\x01\x02") || strings.ContainsAny(v, "\x01\x02") {
			return fmt.Errorf("property %q contains a separator byte", k)
		}
	}
	return nil
}
