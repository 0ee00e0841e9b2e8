package rmqtest

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// This file holds the remoting frame codec: the framing every RocketMQ client
// and server speak over TCP.
//
//	int32  total length (counts everything after this field)
//	byte   serialization type (0 = JSON)
//	uint24 header length
//	[]byte header (JSON)
//	[]byte body (total length - 4 - header length)

// Request and response codes used by the broker. Only the codes this broker
// handles or sends are listed.
const (
	codeSendMessage              int16 = 10
	codeUpdateAndCreateTopic     int16 = 17
	codePullMessage              int16 = 11
	codeQueryConsumerOffset      int16 = 14
	codeUpdateConsumerOffset     int16 = 15
	codeSearchOffsetByTimestamp  int16 = 29
	codeGetMaxOffset             int16 = 30
	codeGetMinOffset             int16 = 31
	codeGetEarliestMsgStoretime  int16 = 32
	codeHeartBeat                int16 = 34
	codeUnregisterClient         int16 = 35
	codeConsumerSendMsgBack      int16 = 36
	codeEndTransaction           int16 = 37
	codeGetConsumerListByGroup   int16 = 38
	codeCheckTransactionState    int16 = 39
	codeNotifyConsumerIdsChanged int16 = 40
	codeLockBatchMQ              int16 = 41
	codeUnlockBatchMQ            int16 = 42
	codeGetRouteInfoByTopic      int16 = 105
	codeGetBrokerClusterInfo     int16 = 106
	codeSendMessageV2            int16 = 310
	codeSendBatchMessage         int16 = 320
)

// Response codes.
const (
	respSuccess                 int16 = 0
	respSystemError             int16 = 1
	respSystemBusy              int16 = 2
	respRequestCodeNotSupported int16 = 3
	respMessageIllegal          int16 = 13
	respServiceNotAvailable     int16 = 14
	respTopicNotExist           int16 = 17
	respPullNotFound            int16 = 19
	respPullRetryImmediately    int16 = 20
	respPullOffsetMoved         int16 = 21
	respQueryNotFound           int16 = 22
)

// Flag bits of a remoting command.
const (
	flagResponse int32 = 1 << 0
	flagOneway   int32 = 1 << 1
)

// brokerVersion is the version the broker reports in its responses
// (RocketMQ V4_9_4). Clients only use it to gate features of old brokers.
const brokerVersion = 435

// Limits of the frame codec. A frame whose declared sizes break them is
// rejected before anything of that size is allocated.
const (
	// maxHeaderLen bounds the JSON header. A send header carries the message
	// properties, which the stored-message format caps at 32 KiB.
	maxHeaderLen = 1 << 20
	// minFrameLen is the smallest legal total length: the serialization
	// word plus an empty header.
	minFrameLen = 4
)

// Errors of the frame codec.
var (
	// errFrameTooShort reports a frame whose length field is smaller than
	// the fixed part of a frame, or negative.
	errFrameTooShort = errors.New("rmqtest: frame length too short")
	// errFrameTooLarge reports a frame larger than the configured limit.
	errFrameTooLarge = errors.New("rmqtest: frame too large")
	// errBadHeaderLen reports a header length that does not fit the frame.
	errBadHeaderLen = errors.New("rmqtest: bad header length")
	// errSerializeType reports a header serialization other than JSON.
	errSerializeType = errors.New("rmqtest: unsupported header serialization")
)

// command is one remoting request or response.
type command struct {
	Code      int16             `json:"code"`
	Language  string            `json:"language"`
	Version   int16             `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int32             `json:"flag"`
	Remark    string            `json:"remark,omitempty"`
	ExtFields map[string]string `json:"extFields,omitempty"`
	Body      []byte            `json:"-"`
}

// isResponse reports whether c answers an earlier request.
func (c *command) isResponse() bool { return c.Flag&flagResponse != 0 }

// isOneway reports whether the sender expects no response.
func (c *command) isOneway() bool { return c.Flag&flagOneway != 0 }

// ext returns the extension field key, or "" if absent.
func (c *command) ext(key string) string {
	if c.ExtFields == nil {
		return ""
	}
	return c.ExtFields[key]
}

// newResponse builds the response to req with the given code and remark.
func newResponse(req *command, code int16, remark string) *command {
	return &command{
		Code:      code,
		Language:  "JAVA",
		Version:   brokerVersion,
		Opaque:    req.Opaque,
		Flag:      flagResponse,
		Remark:    remark,
		ExtFields: map[string]string{},
	}
}

// newRequest builds a broker-to-client request.
func newRequest(code int16, opaque int32, oneway bool, ext map[string]string, body []byte) *command {
	c := &command{
		Code:      code,
		Language:  "JAVA",
		Version:   brokerVersion,
		Opaque:    opaque,
		ExtFields: ext,
		Body:      body,
	}
	if oneway {
		c.Flag |= flagOneway
	}
	return c
}

// encodeCommand returns the wire form of c, length prefix included.
func encodeCommand(c *command) ([]byte, error) {
	header, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("rmqtest: encode header: %w", err)
	}
	if len(header) > maxHeaderLen {
		return nil, fmt.Errorf("rmqtest: encode header: %w", errBadHeaderLen)
	}
	total := 4 + len(header) + len(c.Body)
	buf := make([]byte, 4+total)
	binary.BigEndian.PutUint32(buf[0:], uint32(total))
	binary.BigEndian.PutUint32(buf[4:], uint32(len(header))) // serialization type 0 in the top byte
	copy(buf[8:], header)
	copy(buf[8+len(header):], c.Body)
	return buf, nil
}

// frameError is a decoding failure after which the stream is still aligned
// on the next frame (the whole bad frame was consumed). The server answers
// such a frame with an error when it knows the opaque, and keeps reading.
type frameError struct {
	err    error
	opaque int32
	// known reports whether opaque came from a parsed header.
	known bool
	// tooLarge reports a frame whose body was skipped for its size.
	tooLarge bool
}

func (e *frameError) Error() string { return e.err.Error() }
func (e *frameError) Unwrap() error { return e.err }

// readCommand reads one frame from r. maxFrame bounds the total length of a
// frame the reader will buffer.
//
// A frame whose declared total length exceeds maxFrame, but whose header is
// sane, has its header decoded and its body discarded without buffering: the
// returned *frameError has tooLarge set, so the caller can answer "too large"
// and carry on. Any other framing error leaves the stream unusable and is
// returned as a plain error.
func readCommand(r *bufio.Reader, maxFrame int) (*command, error) {
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:4]); err != nil {
		return nil, err
	}
	total := int64(int32(binary.BigEndian.Uint32(lenBuf[:4])))
	if total < minFrameLen {
		return nil, errFrameTooShort
	}
	if _, err := io.ReadFull(r, lenBuf[4:8]); err != nil {
		return nil, unexpectedEOF(err)
	}
	word := binary.BigEndian.Uint32(lenBuf[4:8])
	serType := byte(word >> 24)
	headerLen := int64(word & 0xFFFFFF)
	if headerLen > total-4 || headerLen > maxHeaderLen {
		return nil, errBadHeaderLen
	}
	bodyLen := total - 4 - headerLen
	if total > int64(maxFrame) {
		// Decode the header to learn the opaque, then skip the body.
		header := make([]byte, headerLen)
		if _, err := io.ReadFull(r, header); err != nil {
			return nil, unexpectedEOF(err)
		}
		if _, err := io.CopyN(io.Discard, r, bodyLen); err != nil {
			return nil, unexpectedEOF(err)
		}
		fe := &frameError{err: errFrameTooLarge, tooLarge: true}
		if serType == 0 {
			if c, err := decodeHeader(header); err == nil {
				fe.opaque, fe.known = c.Opaque, true
			}
		}
		return nil, fe
	}
	buf := make([]byte, total-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, unexpectedEOF(err)
	}
	if serType != 0 {
		return nil, &frameError{err: fmt.Errorf("%w: type %d", errSerializeType, serType)}
	}
	c, err := decodeHeader(buf[:headerLen])
	if err != nil {
		fe := &frameError{err: err}
		fe.opaque, fe.known = salvageOpaque(buf[:headerLen])
		return nil, fe
	}
	if bodyLen > 0 {
		c.Body = buf[headerLen:]
	}
	return c, nil
}

// decodeFrame decodes one complete frame (length prefix included) held in
// data, returning the command and the number of bytes used. maxFrame bounds
// the total length as in readCommand; oversized frames are an error here.
func decodeFrame(data []byte, maxFrame int) (*command, int, error) {
	if len(data) < 8 {
		return nil, 0, io.ErrUnexpectedEOF
	}
	total := int64(int32(binary.BigEndian.Uint32(data[:4])))
	if total < minFrameLen {
		return nil, 0, errFrameTooShort
	}
	if total > int64(maxFrame) {
		return nil, 0, errFrameTooLarge
	}
	if int64(len(data)-4) < total {
		return nil, 0, io.ErrUnexpectedEOF
	}
	word := binary.BigEndian.Uint32(data[4:8])
	if serType := byte(word >> 24); serType != 0 {
		return nil, 0, fmt.Errorf("%w: type %d", errSerializeType, serType)
	}
	headerLen := int64(word & 0xFFFFFF)
	if headerLen > total-4 || headerLen > maxHeaderLen {
		return nil, 0, errBadHeaderLen
	}
	c, err := decodeHeader(data[8 : 8+headerLen])
	if err != nil {
		return nil, 0, err
	}
	if body := data[8+headerLen : 4+total]; len(body) > 0 {
		c.Body = append([]byte(nil), body...)
	}
	return c, int(4 + total), nil
}

// decodeHeader parses a JSON command header.
func decodeHeader(b []byte) (*command, error) {
	var h struct {
		Code      int16             `json:"code"`
		Language  json.RawMessage   `json:"language"`
		Version   int16             `json:"version"`
		Opaque    int32             `json:"opaque"`
		Flag      int32             `json:"flag"`
		Remark    string            `json:"remark"`
		ExtFields map[string]string `json:"extFields"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("rmqtest: decode header: %w", err)
	}
	c := &command{
		Code:      h.Code,
		Version:   h.Version,
		Opaque:    h.Opaque,
		Flag:      h.Flag,
		Remark:    h.Remark,
		ExtFields: h.ExtFields,
	}
	// Clients send the language as a string ("GO") or a number; keep it
	// for logs only.
	var lang string
	if json.Unmarshal(h.Language, &lang) == nil {
		c.Language = lang
	} else {
		c.Language = string(h.Language)
	}
	if c.ExtFields == nil {
		c.ExtFields = map[string]string{}
	}
	return c, nil
}

// salvageOpaque recovers the opaque of a header that failed to decode as a
// whole (for example because of a non-string extension field), so the
// sender can still get an error response.
func salvageOpaque(b []byte) (int32, bool) {
	var h struct {
		Opaque *int32 `json:"opaque"`
	}
	if json.Unmarshal(b, &h) != nil || h.Opaque == nil {
		return 0, false
	}
	return *h.Opaque, true
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
