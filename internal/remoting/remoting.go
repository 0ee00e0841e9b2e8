// Package remoting speaks just enough of RocketMQ's remoting protocol for
// idemq's own requests to a name server or broker (creating topics,
// checking that a name server answers): one request per connection, the
// reply's code returned to the caller, never ignored.
//
// A frame is an int32 total length (counting what follows it), an int32
// whose high byte is the header serialization (0 = JSON) and whose low 24
// bits are the header length, the JSON header, then the body.
package remoting

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Request codes idemq sends.
const (
	CodeUpdateAndCreateTopic int16 = 17
	CodeGetRouteInfoByTopic  int16 = 105
	CodeGetBrokerClusterInfo int16 = 106
	ResponseSuccess          int16 = 0
	ResponseTopicNotExist    int16 = 17
	flagResponse             int32 = 1
	maxFrame                       = 16 << 20
	defaultTimeout                 = 3 * time.Second
	clientVersion            int16 = 317 // V4_3_0, what rocketmq-client-go sends
	serializeJSON                  = 0
	headerLenMask                  = 0xFFFFFF
)

// Command is a reply.
type Command struct {
	Code   int16             `json:"code"`
	Remark string            `json:"remark,omitempty"`
	Ext    map[string]string `json:"extFields,omitempty"`
	Body   []byte            `json:"-"`
}

type header struct {
	Code     int16             `json:"code"`
	Language string            `json:"language"`
	Version  int16             `json:"version"`
	Opaque   int32             `json:"opaque"`
	Flag     int32             `json:"flag"`
	Remark   string            `json:"remark,omitempty"`
	Ext      map[string]string `json:"extFields,omitempty"`
}

// Call sends one request to addr and returns its reply. It dials a new
// connection and closes it afterwards. Without a deadline on ctx the
// exchange is bounded by 3 seconds.
func Call(ctx context.Context, addr string, code int16, ext map[string]string, body []byte) (*Command, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	const opaque = 1
	h, err := json.Marshal(header{Code: code, Language: "GO", Version: clientVersion, Opaque: opaque, Ext: ext})
	if err != nil {
		return nil, err
	}
	frame := make([]byte, 8, 8+len(h)+len(body))
	binary.BigEndian.PutUint32(frame[0:4], uint32(4+len(h)+len(body)))
	binary.BigEndian.PutUint32(frame[4:8], uint32(serializeJSON<<24|len(h)))
	frame = append(append(frame, h...), body...)
	if _, err := nc.Write(frame); err != nil {
		return nil, ctxErr(ctx, err)
	}
	for {
		reply, hdr, err := read(nc)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		if hdr.Flag&flagResponse != 0 && hdr.Opaque == opaque {
			return reply, nil
		}
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func read(r io.Reader) (*Command, header, error) {
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, header{}, err
	}
	total := int(binary.BigEndian.Uint32(head[0:4]))
	word := binary.BigEndian.Uint32(head[4:8])
	hlen := int(word & headerLenMask)
	if word>>24 != serializeJSON {
		return nil, header{}, errors.New("remoting: reply header is not JSON")
	}
	if total < 4+hlen || total > maxFrame {
		return nil, header{}, fmt.Errorf("remoting: bad frame length %d (header %d)", total, hlen)
	}
	buf := make([]byte, total-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, header{}, err
	}
	var h header
	if err := json.Unmarshal(buf[:hlen], &h); err != nil {
		return nil, header{}, fmt.Errorf("remoting: reply header: %w", err)
	}
	return &Command{Code: h.Code, Remark: h.Remark, Ext: h.Ext, Body: buf[hlen:]}, h, nil
}

// Ping reports whether a name server answers at addr: any reply to a route
// lookup (TOPIC_NOT_EXIST included) proves it does. The error says what
// failed: the connection, or the reply.
func Ping(ctx context.Context, addr string) error {
	if _, err := Call(ctx, addr, CodeGetRouteInfoByTopic, map[string]string{"topic": "TBW102"}, nil); err != nil {
		return fmt.Errorf("name server %s does not answer: %w", addr, err)
	}
	return nil
}

// ErrNoNameServer is returned by CheckNameServers when no name server
// answers.
var ErrNoNameServer = errors.New("no name server answers")

// CheckNameServers returns nil as soon as one of addrs answers (see Ping),
// and otherwise an error wrapping ErrNoNameServer that names what failed
// for each.
func CheckNameServers(ctx context.Context, addrs []string) error {
	var errs []error
	for _, a := range addrs {
		err := Ping(ctx, a)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: %w", ErrNoNameServer, errors.Join(errs...))
}

// TopicExists asks the name servers (the first that answers) whether they
// route topic. It reports an error only when none answers.
func TopicExists(ctx context.Context, addrs []string, topic string) (bool, error) {
	var errs []error
	for _, a := range addrs {
		r, err := Call(ctx, a, CodeGetRouteInfoByTopic, map[string]string{"topic": topic}, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("name server %s does not answer: %w", a, err))
			continue
		}
		return r.Code == ResponseSuccess, nil
	}
	return false, fmt.Errorf("%w: %w", ErrNoNameServer, errors.Join(errs...))
}
