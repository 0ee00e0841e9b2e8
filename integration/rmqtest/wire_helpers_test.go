package rmqtest

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wireClient speaks raw remoting frames to a broker, as a test double of a
// client library.
type wireClient struct {
	t      testing.TB
	nc     net.Conn
	opaque atomic.Int32

	mu      sync.Mutex
	waiting map[int32]chan *command
	// pushed receives broker-initiated requests.
	pushed chan *command
	// closed is closed when the read loop ends.
	closed chan struct{}
}

func dialWire(t testing.TB, b *Broker) *wireClient {
	t.Helper()
	nc, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	w := &wireClient{
		t:       t,
		nc:      nc,
		waiting: map[int32]chan *command{},
		pushed:  make(chan *command, 64),
		closed:  make(chan struct{}),
	}
	go w.readLoop()
	t.Cleanup(func() { _ = nc.Close() })
	return w
}

func (w *wireClient) readLoop() {
	defer close(w.closed)
	r := bufio.NewReader(w.nc)
	for {
		cmd, err := readCommand(r, 64<<20)
		if err != nil {
			return
		}
		if !cmd.isResponse() {
			w.pushed <- cmd
			continue
		}
		w.mu.Lock()
		ch := w.waiting[cmd.Opaque]
		delete(w.waiting, cmd.Opaque)
		w.mu.Unlock()
		if ch != nil {
			ch <- cmd
		}
	}
}

// start sends a request and returns the channel its response arrives on.
func (w *wireClient) start(code int16, ext map[string]string, body []byte) (int32, chan *command) {
	w.t.Helper()
	op := w.opaque.Add(1)
	ch := make(chan *command, 1)
	w.mu.Lock()
	w.waiting[op] = ch
	w.mu.Unlock()
	cmd := &command{Code: code, Language: "GO", Version: 317, Opaque: op, ExtFields: ext, Body: body}
	frame, err := encodeCommand(cmd)
	if err != nil {
		w.t.Fatalf("encode: %v", err)
	}
	w.writeRaw(frame)
	return op, ch
}

// call sends a request and waits for its response.
func (w *wireClient) call(code int16, ext map[string]string, body []byte) *command {
	w.t.Helper()
	_, ch := w.start(code, ext, body)
	return w.wait(ch, 5*time.Second)
}

func (w *wireClient) wait(ch chan *command, d time.Duration) *command {
	w.t.Helper()
	select {
	case resp := <-ch:
		return resp
	case <-w.closed:
		w.t.Fatal("connection closed while waiting for a response")
	case <-time.After(d):
		w.t.Fatalf("no response within %v", d)
	}
	return nil
}

// send sends a one-way request.
func (w *wireClient) send(code int16, ext map[string]string, body []byte) {
	w.t.Helper()
	cmd := &command{Code: code, Language: "GO", Opaque: w.opaque.Add(1), Flag: flagOneway, ExtFields: ext, Body: body}
	frame, err := encodeCommand(cmd)
	if err != nil {
		w.t.Fatalf("encode: %v", err)
	}
	w.writeRaw(frame)
}

func (w *wireClient) writeRaw(b []byte) {
	w.t.Helper()
	if _, err := w.nc.Write(b); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// expectClosed waits for the broker to close the connection.
func (w *wireClient) expectClosed(d time.Duration) {
	w.t.Helper()
	select {
	case <-w.closed:
	case <-time.After(d):
		w.t.Fatalf("connection still open after %v", d)
	}
}

// nextPushed waits for a broker-initiated request.
func (w *wireClient) nextPushed(d time.Duration) *command {
	w.t.Helper()
	select {
	case cmd := <-w.pushed:
		return cmd
	case <-time.After(d):
		w.t.Fatalf("no broker request within %v", d)
	}
	return nil
}

// rawFrame builds a frame from a header string and body, with the lengths
// given explicitly (negative means "correct").
func rawFrame(header string, body []byte, total, headerLen int, serType byte) []byte {
	if total < 0 {
		total = 4 + len(header) + len(body)
	}
	if headerLen < 0 {
		headerLen = len(header)
	}
	b := make([]byte, 8, 8+len(header)+len(body))
	binary.BigEndian.PutUint32(b, uint32(int32(total)))
	binary.BigEndian.PutUint32(b[4:], uint32(headerLen)|uint32(serType)<<24)
	b = append(b, header...)
	return append(b, body...)
}

// sendExt returns SEND_MESSAGE extension fields.
func sendExt(group, topic string, queueID int, props string) map[string]string {
	return map[string]string{
		"producerGroup":  group,
		"topic":          topic,
		"queueId":        itoa(int64(queueID)),
		"sysFlag":        "0",
		"bornTimestamp":  itoa(time.Now().UnixMilli()),
		"flag":           "0",
		"properties":     props,
		"reconsumeTimes": "0",
		"batch":          "false",
	}
}

// pullExt returns PULL_MESSAGE extension fields.
func pullExt(group, topic string, queueID int, offset int64, suspend time.Duration) map[string]string {
	sysFlag := 0
	if suspend > 0 {
		sysFlag |= 2
	}
	return map[string]string{
		"consumerGroup":        group,
		"topic":                topic,
		"queueId":              itoa(int64(queueID)),
		"queueOffset":          itoa(offset),
		"maxMsgNums":           "32",
		"sysFlag":              itoa(int64(sysFlag)),
		"commitOffset":         "0",
		"suspendTimeoutMillis": itoa(suspend.Milliseconds()),
		"subscription":         "",
		"subVersion":           "0",
		"expressionType":       "TAG",
	}
}
