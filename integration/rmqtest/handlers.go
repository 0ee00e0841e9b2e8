package rmqtest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// This file holds the request handlers. Each takes the connection and the
// request and returns the response (nil for none).

// handle dispatches a request other than PULL_MESSAGE.
func (b *Broker) handle(c *conn, cmd *command) *command {
	switch cmd.Code {
	case codeGetRouteInfoByTopic:
		return b.handleRoute(cmd)
	case codeUpdateAndCreateTopic:
		return b.handleCreateTopic(cmd)
	case codeGetBrokerClusterInfo:
		return b.handleClusterInfo(cmd)
	case codeHeartBeat:
		return b.handleHeartbeat(c, cmd)
	case codeUnregisterClient:
		return b.handleUnregister(cmd)
	case codeSendMessage, codeSendMessageV2, codeSendBatchMessage:
		return b.handleSend(c, cmd)
	case codeQueryConsumerOffset:
		return b.handleQueryOffset(cmd)
	case codeUpdateConsumerOffset:
		return b.handleUpdateOffset(cmd)
	case codeGetMaxOffset:
		resp := newResponse(cmd, respSuccess, "")
		resp.ExtFields["offset"] = itoa(b.store.maxOffset(cmd.ext("topic"), atoi32(cmd.ext("queueId"), -1)))
		return resp
	case codeGetMinOffset:
		resp := newResponse(cmd, respSuccess, "")
		resp.ExtFields["offset"] = "0"
		return resp
	case codeSearchOffsetByTimestamp:
		resp := newResponse(cmd, respSuccess, "")
		resp.ExtFields["offset"] = itoa(b.store.searchOffset(cmd.ext("topic"),
			atoi32(cmd.ext("queueId"), -1), atoi64(cmd.ext("timestamp"), 0)))
		return resp
	case codeGetConsumerListByGroup:
		body, _ := json.Marshal(map[string][]string{"consumerIdList": b.consumerIDs(cmd.ext("consumerGroup"))})
		resp := newResponse(cmd, respSuccess, "")
		resp.Body = body
		return resp
	case codeConsumerSendMsgBack:
		return b.handleSendBack(c, cmd)
	case codeEndTransaction:
		return b.handleEndTransaction(cmd)
	case codeLockBatchMQ:
		return b.handleLock(cmd)
	case codeUnlockBatchMQ:
		return b.handleUnlock(cmd)
	default:
		b.log.Warn("rmqtest: request code not supported", "code", cmd.Code, "remote", c.nc.RemoteAddr())
		return newResponse(cmd, respRequestCodeNotSupported,
			fmt.Sprintf("request code %d not supported by rmqtest", cmd.Code))
	}
}

// topicPattern is RocketMQ's rule for topic names.
var topicPattern = regexp.MustCompile(`^[%|a-zA-Z0-9_-]+$`)

func validTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("empty topic")
	case len(topic) > maxTopicLen:
		return fmt.Errorf("topic %q longer than %d characters", topic, maxTopicLen)
	case !topicPattern.MatchString(topic):
		return fmt.Errorf("topic %q has characters outside [%%|a-zA-Z0-9_-]", topic)
	}
	return nil
}

// isRetryTopic reports whether topic is a group's retry topic, which the
// broker creates itself (on the group's heartbeat, a send-back or a send
// into it).
func isRetryTopic(topic string) bool { return strings.HasPrefix(topic, retryTopicPrefix) }

// topicQueues returns the queue count of topic, creating it first where
// the broker would: always for a retry topic, and for any topic with
// Config.AutoCreateTopics. It returns 0 for a topic that does not exist.
func (b *Broker) topicQueues(topic string) int {
	if n := b.store.queueCount(topic); n > 0 {
		return n
	}
	if b.cfg.AutoCreateTopics || isRetryTopic(topic) {
		return b.store.ensureTopic(topic)
	}
	return 0
}

func (b *Broker) handleRoute(cmd *command) *command {
	topic := cmd.ext("topic")
	if err := validTopic(topic); err != nil {
		return newResponse(cmd, respTopicNotExist, err.Error())
	}
	n := b.topicQueues(topic)
	if n == 0 {
		return newResponse(cmd, respTopicNotExist, "No topic route info in name server for the topic: "+topic)
	}
	route := map[string]any{
		"orderTopicConf": "",
		"queueDatas": []map[string]any{{
			"brokerName":     BrokerName,
			"readQueueNums":  n,
			"writeQueueNums": n,
			"perm":           6, // read | write
			"topicSynFlag":   0,
		}},
		"brokerDatas": []map[string]any{{
			"cluster":     ClusterName,
			"brokerName":  BrokerName,
			"brokerAddrs": map[string]string{"0": b.addr},
		}},
	}
	body, _ := json.Marshal(route)
	resp := newResponse(cmd, respSuccess, "")
	resp.Body = body
	return resp
}

// handleCreateTopic serves UPDATE_AND_CREATE_TOPIC, the request of
// `mqadmin updateTopic`: it creates the topic with max(readQueueNums,
// writeQueueNums) queues, or grows an existing one (queues are never
// removed).
func (b *Broker) handleCreateTopic(cmd *command) *command {
	topic := cmd.ext("topic")
	if err := validTopic(topic); err != nil {
		return newResponse(cmd, respSystemError, "The specified topic is invalid: "+err.Error())
	}
	if topic == ClusterName || topic == BrokerName {
		return newResponse(cmd, respSystemError, "The specified topic is conflict with cluster or broker name: "+topic)
	}
	n := max(atoi32(cmd.ext("readQueueNums"), 0), atoi32(cmd.ext("writeQueueNums"), 0))
	if n < 1 || n > 1024 {
		return newResponse(cmd, respSystemError, fmt.Sprintf("queue count %d not in [1, 1024]", n))
	}
	b.store.createTopic(topic, int(n))
	b.stats.topicsCreated.Add(1)
	return newResponse(cmd, respSuccess, "")
}

func (b *Broker) handleClusterInfo(cmd *command) *command {
	info := map[string]any{
		"brokerAddrTable": map[string]any{
			BrokerName: map[string]any{
				"cluster":     ClusterName,
				"brokerName":  BrokerName,
				"brokerAddrs": map[string]string{"0": b.addr},
			},
		},
		"clusterAddrTable": map[string][]string{ClusterName: {BrokerName}},
	}
	body, _ := json.Marshal(info)
	resp := newResponse(cmd, respSuccess, "")
	resp.Body = body
	return resp
}

// heartbeat is the part of HEART_BEAT's body the broker reads.
type heartbeat struct {
	ClientID        string          `json:"clientID"`
	ProducerDataSet json.RawMessage `json:"producerDataSet"`
	ConsumerDataSet json.RawMessage `json:"consumerDataSet"`
}

type heartbeatProducer struct {
	GroupName string `json:"groupName"`
}

type heartbeatConsumer struct {
	GroupName           string `json:"groupName"`
	SubscriptionDataSet []struct {
		Topic     string `json:"topic"`
		SubString string `json:"subString"`
	} `json:"subscriptionDataSet"`
}

func (b *Broker) handleHeartbeat(c *conn, cmd *command) *command {
	b.stats.heartbeats.Add(1)
	var hb heartbeat
	if err := json.Unmarshal(cmd.Body, &hb); err != nil || hb.ClientID == "" {
		return newResponse(cmd, respSystemError, "malformed heartbeat body")
	}
	c.setClientID(hb.ClientID)
	var producers []heartbeatProducer
	_ = json.Unmarshal(hb.ProducerDataSet, &producers)
	for _, p := range producers {
		b.addProducer(c, p.GroupName)
	}
	var consumers []heartbeatConsumer
	_ = json.Unmarshal(hb.ConsumerDataSet, &consumers)
	listed := make(map[string]bool, len(consumers))
	for _, cd := range consumers {
		if cd.GroupName == "" {
			continue
		}
		listed[cd.GroupName] = true
		// As a real broker, a group's first heartbeat creates its retry
		// topic.
		b.store.ensureTopic(retryTopicPrefix + cd.GroupName)
		subs := make(map[string]string, len(cd.SubscriptionDataSet))
		for _, sd := range cd.SubscriptionDataSet {
			subs[sd.Topic] = sd.SubString
		}
		if b.registerConsumer(c, cd.GroupName, hb.ClientID, subs) {
			b.log.Debug("rmqtest: consumer joined", "group", cd.GroupName, "client", hb.ClientID)
			b.notifyGroup(cd.GroupName, hb.ClientID)
		}
	}
	// A heartbeat lists every consumer of the client: groups it no longer
	// lists lost a member.
	for _, g := range b.groupsOf(hb.ClientID) {
		if !listed[g] && b.unregisterConsumer(g, hb.ClientID) {
			b.notifyGroup(g, hb.ClientID)
		}
	}
	return newResponse(cmd, respSuccess, "")
}

func (b *Broker) handleUnregister(cmd *command) *command {
	clientID := cmd.ext("clientID")
	if g := cmd.ext("consumerGroup"); g != "" && b.unregisterConsumer(g, clientID) {
		b.notifyGroup(g, clientID)
	}
	return newResponse(cmd, respSuccess, "")
}

// sendHeader is a SEND_MESSAGE header, from either the long or the short
// (V2) field names.
type sendHeader struct {
	group          string
	topic          string
	queueID        int32
	sysFlag        int32
	bornTimestamp  int64
	flag           int32
	properties     string
	reconsumeTimes int32
	// maxReconsumeTimes is -1 when the request does not say.
	maxReconsumeTimes int32
	batch             bool
}

func parseSendHeader(cmd *command) sendHeader {
	get := func(long, short string) string {
		if v, ok := cmd.ExtFields[long]; ok {
			return v
		}
		return cmd.ExtFields[short]
	}
	v2 := cmd.Code == codeSendMessageV2 || cmd.Code == codeSendBatchMessage
	if !v2 {
		get = func(long, _ string) string { return cmd.ExtFields[long] }
	}
	batch, _ := strconv.ParseBool(get("batch", "m"))
	return sendHeader{
		group:             get("producerGroup", "a"),
		topic:             get("topic", "b"),
		queueID:           atoi32(get("queueId", "e"), -1),
		sysFlag:           atoi32(get("sysFlag", "f"), 0),
		bornTimestamp:     atoi64(get("bornTimestamp", "g"), 0),
		flag:              atoi32(get("flag", "h"), 0),
		properties:        get("properties", "i"),
		reconsumeTimes:    atoi32(get("reconsumeTimes", "j"), 0),
		maxReconsumeTimes: atoi32(get("maxReconsumeTimes", "l"), -1),
		batch:             batch || cmd.Code == codeSendBatchMessage,
	}
}

func (b *Broker) refuseSend(cmd *command, code int16, remark string) *command {
	b.stats.sendsRefused.Add(1)
	return newResponse(cmd, code, remark)
}

func (b *Broker) handleSend(c *conn, cmd *command) *command {
	if takeToken(&b.hangSends) {
		b.stats.sendsRefused.Add(1)
		return nil
	}
	if takeToken(&b.rejectSends) {
		return b.refuseSend(cmd, respSystemBusy, "[REJECTREQUEST]system busy (rmqtest RejectSends)")
	}
	h := parseSendHeader(cmd)
	if err := validTopic(h.topic); err != nil {
		return b.refuseSend(cmd, respMessageIllegal, err.Error())
	}
	b.addProducer(c, h.group)

	var items []batchItem
	if h.batch {
		var err error
		if items, err = decodeBatch(cmd.Body); err != nil {
			return b.refuseSend(cmd, respMessageIllegal, err.Error())
		}
	} else {
		items = []batchItem{{Flag: h.flag, Body: cmd.Body, Props: parseProperties(h.properties)}}
	}
	total := 0
	for _, it := range items {
		total += len(it.Body)
		if err := validProperties(it.Props); err != nil {
			return b.refuseSend(cmd, respMessageIllegal, err.Error())
		}
	}
	if total > b.cfg.MaxMessageSize {
		return b.refuseSend(cmd, respMessageIllegal,
			fmt.Sprintf("message body %d bytes exceeds the limit of %d", total, b.cfg.MaxMessageSize))
	}

	now := time.Now()
	var bornHost [4]byte
	var bornPort int32
	if c.remote != nil {
		copy(bornHost[:], c.remote.IP.To4())
		bornPort = int32(c.remote.Port)
	}

	if b.topicQueues(h.topic) == 0 {
		return b.refuseSend(cmd, respTopicNotExist, "topic["+h.topic+"] not exist, apply first please!")
	}
	// A send into a group's retry topic (the client's fallback when a
	// send-back fails) past the group's max reconsume times goes to the
	// group's dead-letter topic, as the broker's handleRetryAndDLQ does.
	dlq := false
	if isRetryTopic(h.topic) && !h.batch {
		maxReconsume := h.maxReconsumeTimes
		if maxReconsume < 0 {
			maxReconsume = defaultMaxReconsumeTimes
		}
		if h.reconsumeTimes >= maxReconsume {
			dlq = true
			h.topic = dlqTopicPrefix + strings.TrimPrefix(h.topic, retryTopicPrefix)
			h.queueID = 0
		}
	}

	s := b.store
	s.mu.Lock()
	t := s.ensureTopicLocked(h.topic)
	qid, ok := pickQueueLocked(t, h.queueID)
	s.mu.Unlock()
	if !ok {
		return b.refuseSend(cmd, respSystemError,
			fmt.Sprintf("queueId %d out of range for topic %s", h.queueID, h.topic))
	}

	var ids []string
	var firstOffset int64 = -1
	var txID string
	for _, it := range items {
		m := &storedMessage{
			Topic:          h.topic,
			QueueID:        qid,
			Flag:           it.Flag,
			SysFlag:        h.sysFlag,
			BornTimestamp:  h.bornTimestamp,
			BornHost:       bornHost,
			BornPort:       bornPort,
			ReconsumeTimes: h.reconsumeTimes,
			Body:           append([]byte(nil), it.Body...),
			Props:          it.Props,
		}
		if h.batch {
			m.SysFlag &^= sysFlagCompressed | sysFlagTranMask
		}
		tran, _ := strconv.ParseBool(m.Props[propTranPrepared])
		tran = tran && !h.batch
		delay := int(atoi32(m.Props[propDelayLevel], 0))
		if dlq {
			tran, delay = false, 0
			delete(m.Props, propDelayLevel)
			b.stats.deadLettered.Add(1)
		}
		switch {
		case tran:
			m.SysFlag = m.SysFlag&^sysFlagTranMask | sysFlagTranPrepared
			m.Props[propRealTopic] = h.topic
			m.Props[propRealQueueID] = itoa(int64(qid))
			half := &halfMessage{msg: m, realTopic: h.topic, realQueue: qid, group: h.group, origin: c}
			if g := m.Props[propProducerGroup]; g != "" {
				half.group = g
			}
			s.addHalf(half, now)
			txID = m.Props[propUniqKey]
		case delay > 0:
			b.deliverLater(m, h.topic, qid, delay, now)
		default:
			s.mu.Lock()
			s.appendLocked(m, now)
			s.mu.Unlock()
		}
		b.stats.sends.Add(1)
		ids = append(ids, b.msgID(m.CommitOffset))
		if firstOffset < 0 {
			firstOffset = m.QueueOffset
		}
	}

	resp := newResponse(cmd, respSuccess, "")
	resp.ExtFields["msgId"] = strings.Join(ids, ",")
	resp.ExtFields["queueId"] = itoa(int64(qid))
	resp.ExtFields["queueOffset"] = itoa(firstOffset)
	resp.ExtFields["MSG_REGION"] = "DefaultRegion"
	resp.ExtFields["TRACE_ON"] = "false"
	if txID != "" {
		resp.ExtFields["transactionId"] = txID
	}
	return resp
}

// deliverLater stores m in the schedule (it gets a commit-log position now,
// as RocketMQ's SCHEDULE_TOPIC_XXXX copy does) and appends a copy to
// realTopic/realQueue once the delay of level has passed.
func (b *Broker) deliverLater(m *storedMessage, realTopic string, realQueue int32, level int, now time.Time) {
	if level > maxDelayLevel {
		level = maxDelayLevel
	}
	m.Props[propDelayLevel] = itoa(int64(level))
	m.Props[propRealTopic] = realTopic
	m.Props[propRealQueueID] = itoa(int64(realQueue))
	s := b.store
	s.mu.Lock()
	s.ensureTopicLocked(realTopic)
	m.QueueOffset = s.scheduleCount
	s.scheduleCount++
	s.scheduled[realTopic]++
	m.StoreTimestamp = now.UnixMilli()
	s.allocCommitLocked(m)
	due := m.clone()
	s.mu.Unlock()

	deliver := func() {
		due.Topic, due.QueueID = realTopic, realQueue
		delete(due.Props, propDelayLevel)
		s.mu.Lock()
		s.scheduled[realTopic]--
		s.appendLocked(due, time.Now())
		s.mu.Unlock()
	}
	d := delayFor(level, b.cfg.TimeScale)
	if d <= 0 {
		deliver()
		return
	}
	b.schedule(d, deliver)
}

// msgID returns the offset message ID of a commit-log position: store IP,
// port and offset, 32 hex characters.
func (b *Broker) msgID(commitOffset int64) string {
	return primitive.CreateMessageId(b.ip[:], b.port, commitOffset)
}

func (b *Broker) handlePull(c *conn, cmd *command) *command {
	group := cmd.ext("consumerGroup")
	topic := cmd.ext("topic")
	qid := atoi32(cmd.ext("queueId"), -1)
	offset := atoi64(cmd.ext("queueOffset"), -1)
	maxMsgs := int(atoi32(cmd.ext("maxMsgNums"), 32))
	sysFlag := atoi32(cmd.ext("sysFlag"), 0)
	suspend := time.Duration(atoi64(cmd.ext("suspendTimeoutMillis"), 0)) * time.Millisecond
	if maxMsgs <= 0 || maxMsgs > 1024 {
		maxMsgs = 32
	}
	n := b.store.queueCount(topic)
	if n == 0 {
		return newResponse(cmd, respTopicNotExist, "topic "+topic+" does not exist")
	}
	if qid < 0 || int(qid) >= n {
		return newResponse(cmd, respSystemError, fmt.Sprintf("queueId %d out of range for topic %s", qid, topic))
	}
	b.stats.pulls.Add(1)
	b.notePull(group, topic, qid)

	// sysFlag bit 0: the request carries the consumer's committed offset.
	if sysFlag&1 != 0 && group != "" {
		if co := atoi64(cmd.ext("commitOffset"), -1); co >= 0 {
			b.store.setConsumerOffset(group, topic, qid, co)
		}
	}
	var filter map[string]bool
	if sysFlag&4 != 0 {
		filter = parseTagFilter(cmd.ext("subscription"))
	} else if expr, ok := b.subscription(group, topic); ok {
		filter = parseTagFilter(expr)
	}

	wait := min(suspend, b.cfg.LongPollMax)
	if sysFlag&2 == 0 {
		wait = 0
	}
	deadline := time.Now().Add(wait)
	for {
		arrived := b.store.arrival(topic, qid)
		res := b.store.pull(topic, qid, offset, maxMsgs, b.cfg.MaxMessageSize, filter)
		if res.moved {
			resp := newResponse(cmd, respPullOffsetMoved, "offset out of range")
			setPullExt(resp, res)
			return resp
		}
		if len(res.msgs) > 0 {
			resp := newResponse(cmd, respSuccess, "")
			setPullExt(resp, res)
			var body []byte
			for _, m := range res.msgs {
				body = encodeStored(body, m, b.ip, b.port)
			}
			resp.Body = body
			return resp
		}
		if res.scanned > 0 {
			// Messages were there but none matched the tags.
			resp := newResponse(cmd, respPullRetryImmediately, "no matched message")
			setPullExt(resp, res)
			return resp
		}
		left := time.Until(deadline)
		if left <= 0 {
			resp := newResponse(cmd, respPullNotFound, "no new message")
			setPullExt(resp, res)
			return resp
		}
		t := time.NewTimer(left)
		select {
		case <-arrived:
			t.Stop()
		case <-t.C:
		case <-c.drain:
			t.Stop()
			// An error reply makes the client wait 3 s before pulling again,
			// by which time it has seen the connection close and will dial
			// a new one.
			return newResponse(cmd, respServiceNotAvailable, dropRemark)
		case <-c.done:
			t.Stop()
			return nil
		}
	}
}

func setPullExt(resp *command, res pullResult) {
	resp.ExtFields["nextBeginOffset"] = itoa(res.nextOffset)
	resp.ExtFields["minOffset"] = "0"
	resp.ExtFields["maxOffset"] = itoa(res.maxOffset)
	resp.ExtFields["suggestWhichBrokerId"] = "0"
}

func (b *Broker) handleQueryOffset(cmd *command) *command {
	group, topic := cmd.ext("consumerGroup"), cmd.ext("topic")
	qid := atoi32(cmd.ext("queueId"), -1)
	if off, ok := b.store.consumerOffset(group, topic, qid); ok {
		resp := newResponse(cmd, respSuccess, "")
		resp.ExtFields["offset"] = itoa(off)
		return resp
	}
	// A group without a committed offset: QUERY_NOT_FOUND, after which
	// the client applies its ConsumeFromWhere (last offset by default,
	// so a new group skips the backlog). See the package doc for the one
	// case where a real 4.x broker answers 0 instead.
	return newResponse(cmd, respQueryNotFound, "Not found, maybe this group consumer boot first")
}

func (b *Broker) handleUpdateOffset(cmd *command) *command {
	group, topic := cmd.ext("consumerGroup"), cmd.ext("topic")
	qid := atoi32(cmd.ext("queueId"), -1)
	off := atoi64(cmd.ext("commitOffset"), -1)
	if group == "" || qid < 0 || off < 0 || b.store.queueCount(topic) == 0 {
		return newResponse(cmd, respSystemError, "bad offset update")
	}
	b.store.setConsumerOffset(group, topic, qid, off)
	return newResponse(cmd, respSuccess, "")
}

func (b *Broker) handleSendBack(c *conn, cmd *command) *command {
	if takeToken(&b.dropSendBack) {
		b.stats.sendBacksFailed.Add(1)
		// No reply; the connection is dropped the way DropConnections
		// drops it, held long polls answered first, so the consumer's
		// pulls on it are not left to their 30 s timeout.
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			c.dropGracefully()
		}()
		return nil
	}
	if takeToken(&b.failSendBack) {
		b.stats.sendBacksFailed.Add(1)
		return newResponse(cmd, respSystemError, "send-back failed (rmqtest FailSendBack)")
	}
	group := cmd.ext("group")
	if group == "" {
		b.stats.sendBacksFailed.Add(1)
		return newResponse(cmd, respSystemError, "send-back without group")
	}
	orig, ok := b.store.lookup(atoi64(cmd.ext("offset"), -1))
	if !ok {
		b.stats.sendBacksFailed.Add(1)
		return newResponse(cmd, respSystemError, "look message by offset failed: "+cmd.ext("offset"))
	}
	delayLevel := int(atoi32(cmd.ext("delayLevel"), 0))
	maxReconsume := atoi32(cmd.ext("maxReconsumeTimes"), 16)

	m := orig.clone()
	if m.Props[propRetryTopic] == "" {
		m.Props[propRetryTopic] = orig.Topic
	}
	if m.Props[propOriginMessageID] == "" {
		m.Props[propOriginMessageID] = b.msgID(orig.CommitOffset)
	}
	m.Props[propWait] = "false"
	delete(m.Props, propDelayLevel)
	m.ReconsumeTimes = orig.ReconsumeTimes + 1
	m.PreparedOffset = 0
	now := time.Now()

	if orig.ReconsumeTimes >= maxReconsume || delayLevel < 0 {
		m.Topic, m.QueueID = dlqTopicPrefix+group, 0
		s := b.store
		s.mu.Lock()
		s.appendLocked(m, now)
		s.mu.Unlock()
		b.stats.deadLettered.Add(1)
	} else {
		if delayLevel == 0 {
			delayLevel = 3 + int(orig.ReconsumeTimes)
		}
		b.deliverLater(m, retryTopicPrefix+group, 0, delayLevel, now)
	}
	b.stats.sendBacks.Add(1)
	return newResponse(cmd, respSuccess, "")
}

// Transaction states of END_TRANSACTION's commitOrRollback.
const (
	tranNotType  = 0
	tranCommit   = 0x2 << 2
	tranRollback = 0x3 << 2
)

func (b *Broker) handleEndTransaction(cmd *command) *command {
	state := atoi32(cmd.ext("commitOrRollback"), -1)
	if state == tranNotType {
		// Unknown: leave the half message for the next check.
		return newResponse(cmd, respSuccess, "")
	}
	if state != tranCommit && state != tranRollback {
		return newResponse(cmd, respSystemError, "bad commitOrRollback")
	}
	h, ok := b.store.takeHalf(atoi64(cmd.ext("commitLogOffset"), -1), cmd.ext("msgId"))
	if !ok {
		return newResponse(cmd, respSystemError, "no half message at that offset")
	}
	if state == tranRollback {
		b.stats.rollbacks.Add(1)
		return newResponse(cmd, respSuccess, "")
	}
	m := h.msg.clone()
	m.PreparedOffset = h.msg.CommitOffset
	m.Topic, m.QueueID = h.realTopic, h.realQueue
	m.SysFlag = m.SysFlag&^sysFlagTranMask | sysFlagTranCommit
	for _, p := range []string{propTranPrepared, propRealTopic, propRealQueueID, propTranCheckTimes} {
		delete(m.Props, p)
	}
	s := b.store
	s.mu.Lock()
	t := s.ensureTopicLocked(m.Topic)
	if int(m.QueueID) >= len(t.queues) || m.QueueID < 0 {
		m.QueueID = 0
	}
	s.appendLocked(m, time.Now())
	s.mu.Unlock()
	b.stats.commits.Add(1)
	return newResponse(cmd, respSuccess, "")
}

// lockBody is the body of LOCK_BATCH_MQ and UNLOCK_BATCH_MQ.
type lockBody struct {
	ConsumerGroup string         `json:"consumerGroup"`
	ClientID      string         `json:"clientId"`
	MQSet         []messageQueue `json:"mqSet"`
}

type messageQueue struct {
	Topic      string `json:"topic"`
	BrokerName string `json:"brokerName"`
	QueueID    int32  `json:"queueId"`
}

func parseLockBody(body []byte) (lockBody, []queueKey, error) {
	var lb lockBody
	if err := json.Unmarshal(body, &lb); err != nil {
		return lb, nil, err
	}
	if lb.ConsumerGroup == "" || lb.ClientID == "" {
		return lb, nil, fmt.Errorf("missing consumerGroup or clientId")
	}
	keys := make([]queueKey, len(lb.MQSet))
	for i, mq := range lb.MQSet {
		keys[i] = queueKey{mq.Topic, mq.QueueID}
	}
	return lb, keys, nil
}

func (b *Broker) handleLock(cmd *command) *command {
	lb, keys, err := parseLockBody(cmd.Body)
	if err != nil {
		return newResponse(cmd, respSystemError, "malformed lock body: "+err.Error())
	}
	locked := b.store.lockQueues(lb.ConsumerGroup, lb.ClientID, keys, time.Now(), b.cfg.LockExpiry)
	ok := make([]messageQueue, 0, len(locked))
	for _, i := range locked {
		ok = append(ok, lb.MQSet[i])
	}
	body, _ := json.Marshal(map[string][]messageQueue{"lockOKMQSet": ok})
	resp := newResponse(cmd, respSuccess, "")
	resp.Body = body
	return resp
}

func (b *Broker) handleUnlock(cmd *command) *command {
	lb, keys, err := parseLockBody(cmd.Body)
	if err != nil {
		return newResponse(cmd, respSystemError, "malformed unlock body: "+err.Error())
	}
	b.store.unlockQueues(lb.ConsumerGroup, lb.ClientID, keys)
	return newResponse(cmd, respSuccess, "")
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
