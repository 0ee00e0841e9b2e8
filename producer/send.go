package producer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	rmqproducer "github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/remoting"
	"github.com/idemq/idemq/internal/rmqprops"
	"github.com/idemq/idemq/msgid"
)

// MaxDelayLevel is the highest RocketMQ delay level (2h on the default
// ladder 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h).
const MaxDelayLevel = rmqprops.MaxDelayLevel

// SendResult is the broker's confirmation of a send.
type SendResult struct {
	// MessageID is the idemq message ID that was sent (for a batch, the
	// IDs joined by commas).
	MessageID string
	// MsgID is RocketMQ's client-side MsgId (the UNIQ_KEY property); it
	// is new for every send and empty for batches.
	MsgID string
	// OffsetMsgID is the broker-assigned ID of the stored copy (store host
	// and commit-log offset); comma-separated for batches.
	OffsetMsgID string
	// Topic, BrokerName and QueueID name the queue the message went to.
	Topic      string
	BrokerName string
	QueueID    int
	// QueueOffset is the message's offset in that queue.
	QueueOffset int64
	// TransactionID is set for half messages.
	TransactionID string
}

// SendOption adjusts one send.
type SendOption func(*sendOptions) error

type sendOptions struct {
	delayLevel  int
	shardingKey string
}

// WithDelayLevel delays delivery by a RocketMQ delay level, 1..MaxDelayLevel
// (level 1 is 1 s, level 3 is 10 s, level 18 is 2 h on the default ladder).
// Batches cannot be delayed.
func WithDelayLevel(level int) SendOption {
	return func(o *sendOptions) error {
		if level < 1 || level > MaxDelayLevel {
			return fmt.Errorf("%w: delay level %d outside 1..%d", ErrInvalidMessage, level, MaxDelayLevel)
		}
		o.delayLevel = level
		return nil
	}
}

func applyOptions(opts []SendOption) (sendOptions, error) {
	var o sendOptions
	for _, f := range opts {
		if f == nil {
			continue
		}
		if err := f(&o); err != nil {
			return o, idemq.Permanent(err)
		}
	}
	return o, nil
}

var topicRE = regexp.MustCompile(`^[%|a-zA-Z0-9_-]{1,127}$`)

func invalid(format string, args ...any) error {
	return idemq.Permanent(fmt.Errorf("%w: "+format, append([]any{ErrInvalidMessage}, args...)...))
}

// hasSeparator reports whether s holds a byte of RocketMQ's property
// encoding (name\x01value\x02).
func hasSeparator(s string) bool { return strings.ContainsAny(s, "\x01\x02") }

// stamp gives msg its ID (see Producer.Stamp).
func stamp(ids msgid.Source, msg *idemq.Message) error {
	if msg == nil {
		return idemq.Permanent(fmt.Errorf("%w: nil message", ErrInvalidMessage))
	}
	prop := msg.Property(idemq.PropertyMessageID)
	switch {
	case msg.ID == "" && prop != "":
		msg.ID = prop
	case msg.ID == "":
		id, err := ids.NextID()
		if err != nil {
			return fmt.Errorf("producer: new message ID: %w", err)
		}
		msg.ID = id
	case prop != "" && prop != msg.ID:
		return invalid("ID %q differs from property %s=%q", msg.ID, idemq.PropertyMessageID, prop)
	}
	if err := idemq.ValidateKey(msg.ID); err != nil {
		return invalid("message ID %q: %v", msg.ID, err)
	}
	if strings.ContainsAny(msg.ID, " \x01\x02") {
		return invalid("message ID %q contains a space or separator", msg.ID)
	}
	if msg.Properties == nil {
		msg.Properties = make(map[string]string, 1)
	}
	msg.Properties[idemq.PropertyMessageID] = msg.ID
	if !slices.Contains(msg.Keys, msg.ID) {
		msg.Keys = append(msg.Keys, msg.ID)
	}
	return nil
}

// toPrimitive builds a new client message from a stamped idemq message. It
// never copies a primitive.Message (which embeds a mutex).
func toPrimitive(msg *idemq.Message, o sendOptions) (*primitive.Message, error) {
	if !topicRE.MatchString(msg.Topic) {
		return nil, invalid("topic %q (want 1..127 of [a-zA-Z0-9_-%%|])", msg.Topic)
	}
	if hasSeparator(msg.Tags) {
		return nil, invalid("tags %q contain a separator byte", msg.Tags)
	}
	keys := make([]string, 0, len(msg.Keys))
	for _, k := range msg.Keys {
		if k == "" {
			continue
		}
		if strings.ContainsAny(k, " \x01\x02") {
			return nil, invalid("key %q contains a space (RocketMQ's key separator) or separator byte", k)
		}
		keys = append(keys, k)
	}
	pm := primitive.NewMessage(msg.Topic, msg.Body)
	for name, value := range msg.Properties {
		switch {
		case name == "":
			return nil, invalid("empty property name")
		case rmqprops.IsSystem(name):
			return nil, invalid("property %q is reserved by RocketMQ", name)
		case hasSeparator(name) || hasSeparator(value):
			return nil, invalid("property %q contains a separator byte", name)
		case value == "":
			// RocketMQ cannot carry an empty value (WithProperty drops
			// it); the consumer's Property(name) returns "" either way.
			continue
		}
		pm.WithProperty(name, value)
	}
	if msg.Tags != "" {
		pm.WithTag(msg.Tags)
	}
	if len(keys) > 0 {
		pm.WithKeys(keys)
	}
	if o.delayLevel > 0 {
		pm.WithDelayTimeLevel(o.delayLevel)
	}
	if o.shardingKey != "" {
		pm.WithShardingKey(o.shardingKey)
	}
	return pm, nil
}

func fromPrimitive(id string, r *primitive.SendResult) (SendResult, error) {
	if r == nil {
		return SendResult{MessageID: id}, fmt.Errorf("%w: no result", ErrSendNotOK)
	}
	res := SendResult{
		MessageID:     id,
		MsgID:         r.MsgID,
		OffsetMsgID:   r.OffsetMsgID,
		QueueOffset:   r.QueueOffset,
		TransactionID: r.TransactionID,
	}
	if q := r.MessageQueue; q != nil {
		res.Topic, res.BrokerName, res.QueueID = q.Topic, q.BrokerName, q.QueueId
	}
	if r.Status != primitive.SendOK {
		return res, fmt.Errorf("%w: status %s", ErrSendNotOK, statusName(r.Status))
	}
	return res, nil
}

func statusName(s primitive.SendStatus) string {
	switch s {
	case primitive.SendOK:
		return "SEND_OK"
	case primitive.SendFlushDiskTimeout:
		return "FLUSH_DISK_TIMEOUT"
	case primitive.SendFlushSlaveTimeout:
		return "FLUSH_SLAVE_TIMEOUT"
	case primitive.SendSlaveNotAvailable:
		return "SLAVE_NOT_AVAILABLE"
	default:
		return fmt.Sprintf("UNKNOWN(%d)", int(s))
	}
}

// classify wraps a client error. The broker's MESSAGE_ILLEGAL (13) reply
// (oversized body, bad topic) will not go away on a retry.
func classify(err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("producer: send: %w", err)
	if strings.Contains(err.Error(), "CODE: 13,") {
		return idemq.Permanent(err)
	}
	return err
}

// explain is classify for a failed send of a message to topic, except that
// the client's "route info not found", which it says both when no name
// server answers and when the topic does not exist, is replaced by which
// of the two it is (asking the name servers; the error stays retryable).
func explain(nameServers []string, topic string, err error) error {
	if err == nil || !strings.Contains(err.Error(), "route info not found") {
		return classify(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ok, nerr := remoting.TopicExists(ctx, nameServers, topic)
	switch {
	case nerr != nil:
		return fmt.Errorf("producer: send: %w (the client said: %v)", nerr, err)
	case !ok:
		return fmt.Errorf("producer: send: topic %q does not exist on the name server; create it first (topics.Create, mqadmin updateTopic): %w", topic, err)
	}
	return classify(err)
}

// shardingSelector sends a message with a sharding key to the queue its
// hash picks, and any other message round-robin.
type shardingSelector struct {
	rr rmqproducer.QueueSelector
}

func newShardingSelector() *shardingSelector {
	return &shardingSelector{rr: rmqproducer.NewRoundRobinQueueSelector()}
}

// Select implements the client's QueueSelector.
func (s *shardingSelector) Select(msg *primitive.Message, mqs []*primitive.MessageQueue, lastBroker string) *primitive.MessageQueue {
	key := msg.GetShardingKey()
	if key == "" || len(mqs) == 0 {
		return s.rr.Select(msg, mqs, lastBroker)
	}
	// Order the queues the same way in every process, so one key maps to
	// one queue everywhere; ignore lastBroker, as ordering demands.
	sorted := slices.Clone(mqs)
	slices.SortFunc(sorted, func(a, b *primitive.MessageQueue) int {
		if c := cmp.Compare(a.BrokerName, b.BrokerName); c != 0 {
			return c
		}
		return cmp.Compare(a.QueueId, b.QueueId)
	})
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return sorted[h.Sum32()%uint32(len(sorted))]
}

// SendSync stamps msg and sends it, waiting for the broker's confirmation.
// A reply other than SEND_OK is an error wrapping ErrSendNotOK (the
// message may be stored; re-sending it keeps its ID). Errors for messages
// that can never be sent are idemq.Permanent.
func (p *Producer) SendSync(ctx context.Context, msg *idemq.Message, opts ...SendOption) (SendResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return SendResult{}, err
	}
	return p.sendSync(ctx, msg, o)
}

// Send is SendSync returning only the broker's message ID (OffsetMsgID, or
// MsgID when the broker gave none). It is the Sender of the outbox relay.
func (p *Producer) Send(ctx context.Context, msg *idemq.Message) (string, error) {
	return p.SendRoute(ctx, msg, "", 0)
}

// SendRoute is Send with routing: a non-empty shardingKey sends to the
// queue the key hashes to (as SendOrdered), and a positive delayLevel
// delays delivery (as WithDelayLevel). It makes the Producer an
// outbox.RouteSender, so that outbox rows with a sharding key or a delay
// level keep them through the relay.
func (p *Producer) SendRoute(ctx context.Context, msg *idemq.Message, shardingKey string, delayLevel int) (string, error) {
	var opts []SendOption
	if delayLevel > 0 {
		opts = append(opts, WithDelayLevel(delayLevel))
	}
	o, err := applyOptions(opts)
	if err != nil {
		return "", err
	}
	if shardingKey != "" {
		if hasSeparator(shardingKey) {
			return "", invalid("sharding key contains a separator byte")
		}
		o.shardingKey = shardingKey
	}
	res, err := p.sendSync(ctx, msg, o)
	if err != nil {
		return "", err
	}
	if res.OffsetMsgID != "" {
		return res.OffsetMsgID, nil
	}
	return res.MsgID, nil
}

// SendOrdered sends msg to the queue that shardingKey hashes to, so
// messages with the same key keep their order for an orderly consumer. A
// retry goes to the same queue.
func (p *Producer) SendOrdered(ctx context.Context, msg *idemq.Message, shardingKey string, opts ...SendOption) (SendResult, error) {
	if shardingKey == "" {
		return SendResult{}, invalid("empty sharding key")
	}
	if hasSeparator(shardingKey) {
		return SendResult{}, invalid("sharding key contains a separator byte")
	}
	o, err := applyOptions(opts)
	if err != nil {
		return SendResult{}, err
	}
	o.shardingKey = shardingKey
	return p.sendSync(ctx, msg, o)
}

func (p *Producer) sendSync(ctx context.Context, msg *idemq.Message, o sendOptions) (SendResult, error) {
	if err := p.begin(); err != nil {
		return SendResult{}, err
	}
	defer p.end()
	if err := p.Stamp(msg); err != nil {
		return SendResult{}, err
	}
	pm, err := toPrimitive(msg, o)
	if err != nil {
		return SendResult{MessageID: msg.ID}, err
	}
	return p.invoke(ctx, msg.ID, pm)
}

func (p *Producer) invoke(ctx context.Context, id string, pms ...*primitive.Message) (SendResult, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	defer cancel()
	r, err := p.client.SendSync(ctx, pms...)
	if err != nil {
		// The client returns a half-filled result with errors; ignore it.
		return SendResult{MessageID: id}, explain(p.cfg.NameServers, pms[0].Topic, err)
	}
	return fromPrimitive(id, r)
}

// SendAsync stamps msg and sends it in the background, then calls done with
// the result, exactly once, from another goroutine. It returns an error,
// and does not call done, if the message cannot be sent (invalid, no ID,
// the Producer shut down, ctx done while waiting for one of the
// AsyncConcurrency slots). ctx also governs the background send.
//
// SendAsync is built on SendSync in a bounded set of goroutines rather than
// on the client's SendAsync (which panicked after its callback when the
// connection failed until the pinned version, upstream issue 1102, and
// bounds nothing), so it gets SendSync's retries and timeouts. A panic in
// done is recovered and logged.
func (p *Producer) SendAsync(ctx context.Context, msg *idemq.Message, done func(SendResult, error), opts ...SendOption) error {
	if done == nil {
		return errors.New("producer: SendAsync with a nil callback")
	}
	o, err := applyOptions(opts)
	if err != nil {
		return err
	}
	if err := p.begin(); err != nil {
		return err
	}
	// Stamp and convert now: the ID is fixed when SendAsync returns and
	// the background send does not read msg.
	if err := p.Stamp(msg); err != nil {
		p.end()
		return err
	}
	pm, err := toPrimitive(msg, o)
	if err != nil {
		p.end()
		return err
	}
	select {
	case p.async <- struct{}{}:
	case <-ctx.Done():
		p.end()
		return fmt.Errorf("producer: waiting for an async slot: %w", ctx.Err())
	}
	id := msg.ID
	go func() {
		defer p.end()
		defer func() { <-p.async }()
		res, err := p.invoke(ctx, id, pm)
		defer func() {
			if r := recover(); r != nil {
				p.log.Error("SendAsync callback panicked", "message_id", id, "panic", r)
			}
		}()
		done(res, err)
	}()
	return nil
}

// SendOneWay stamps msg and sends it without waiting for the broker: there
// is no confirmation, so the message may be lost. Use it only where that is
// acceptable.
func (p *Producer) SendOneWay(ctx context.Context, msg *idemq.Message, opts ...SendOption) error {
	o, err := applyOptions(opts)
	if err != nil {
		return err
	}
	if err := p.begin(); err != nil {
		return err
	}
	defer p.end()
	if err := p.Stamp(msg); err != nil {
		return err
	}
	pm, err := toPrimitive(msg, o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	defer cancel()
	return explain(p.cfg.NameServers, pm.Topic, p.client.SendOneWay(ctx, pm))
}

// SendBatch stamps every message and sends them in one request. They must
// share a topic; options that do not apply to batches (delay) are refused.
// The broker stores all or none.
func (p *Producer) SendBatch(ctx context.Context, msgs []*idemq.Message) (SendResult, error) {
	if len(msgs) == 0 {
		return SendResult{}, invalid("empty batch")
	}
	if err := p.begin(); err != nil {
		return SendResult{}, err
	}
	defer p.end()
	pms := make([]*primitive.Message, 0, len(msgs))
	ids := make([]string, 0, len(msgs))
	for i, m := range msgs {
		if err := p.Stamp(m); err != nil {
			return SendResult{}, fmt.Errorf("batch message %d: %w", i, err)
		}
		if m.Topic != msgs[0].Topic {
			return SendResult{}, invalid("batch message %d has topic %q, the first %q", i, m.Topic, msgs[0].Topic)
		}
		pm, err := toPrimitive(m, sendOptions{})
		if err != nil {
			return SendResult{}, fmt.Errorf("batch message %d: %w", i, err)
		}
		pms = append(pms, pm)
		ids = append(ids, m.ID)
	}
	return p.invoke(ctx, strings.Join(ids, ","), pms...)
}
