package rmqtest

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file holds the message store: topics and their queues, the commit
// log index, consumer offsets, scheduled (delayed) messages, half
// (transactional) messages and orderly-consumer queue locks. Every method
// takes the store's lock; nothing here does I/O.

// Topic name prefixes of per-group system topics.
const (
	retryTopicPrefix = "%RETRY%"
	dlqTopicPrefix   = "%DLQ%"
	// halfTopic is where RocketMQ keeps half messages; they never appear in
	// a consumable topic of this broker until committed.
	halfTopic = "RMQ_SYS_TRANS_HALF_TOPIC"
)

// defaultMaxReconsumeTimes is a group's retryMaxTimes when a request does
// not carry maxReconsumeTimes, as RocketMQ's subscription group default.
const defaultMaxReconsumeTimes = 16

// delayLadder is RocketMQ's default messageDelayLevel, level 1 first.
var delayLadder = []time.Duration{
	1 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	1 * time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute,
	5 * time.Minute, 6 * time.Minute, 7 * time.Minute, 8 * time.Minute,
	9 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute,
	1 * time.Hour, 2 * time.Hour,
}

// maxDelayLevel is the highest delay level; higher levels are clamped.
var maxDelayLevel = len(delayLadder)

type queueKey struct {
	topic string
	id    int32
}

type offsetKey struct {
	group string
	topic string
	id    int32
}

type lockEntry struct {
	clientID string
	expires  time.Time
}

type topicData struct {
	queues [][]*storedMessage
	// next is the round-robin cursor for sends that name no queue.
	next int
}

// halfMessage is an unsettled transactional message.
type halfMessage struct {
	msg *storedMessage
	// realTopic and realQueue say where a commit puts the message.
	realTopic string
	realQueue int32
	group     string
	// origin is the connection that sent the half message; checks go there
	// first while it is open.
	origin    *conn
	checks    int
	lastCheck time.Time
}

// store is the broker's in-memory state.
type store struct {
	mu            sync.Mutex
	queuesPer     int
	topics        map[string]*topicData
	commitLog     map[int64]*storedMessage
	nextCommit    int64
	offsets       map[offsetKey]int64
	arrivals      map[queueKey]chan struct{}
	halves        map[int64]*halfMessage
	halfOffset    int64
	scheduleCount int64
	// scheduled counts delayed messages not yet due, by real topic.
	scheduled map[string]int
	locks     map[offsetKey]lockEntry
}

func newStore(queuesPer int) *store {
	return &store{
		queuesPer: queuesPer,
		topics:    make(map[string]*topicData),
		commitLog: make(map[int64]*storedMessage),
		offsets:   make(map[offsetKey]int64),
		arrivals:  make(map[queueKey]chan struct{}),
		halves:    make(map[int64]*halfMessage),
		locks:     make(map[offsetKey]lockEntry),
		scheduled: make(map[string]int),
	}
}

// queueCountFor returns how many queues an auto-created topic gets: one for
// per-group retry and dead-letter topics, as RocketMQ does.
func (s *store) queueCountFor(topic string) int {
	if strings.HasPrefix(topic, retryTopicPrefix) || strings.HasPrefix(topic, dlqTopicPrefix) {
		return 1
	}
	return s.queuesPer
}

// ensureTopicLocked returns the topic, creating it when absent.
func (s *store) ensureTopicLocked(topic string) *topicData {
	t, ok := s.topics[topic]
	if !ok {
		t = &topicData{queues: make([][]*storedMessage, s.queueCountFor(topic))}
		s.topics[topic] = t
	}
	return t
}

// ensureTopic creates topic if needed and returns its queue count.
func (s *store) ensureTopic(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ensureTopicLocked(topic).queues)
}

// createTopic creates topic with n queues, or grows an existing topic to n
// queues (queues are never removed, so messages are never lost), and
// returns its queue count.
func (s *store) createTopic(topic string, n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topics[topic]
	if !ok {
		t = &topicData{queues: make([][]*storedMessage, n)}
		s.topics[topic] = t
	}
	for len(t.queues) < n {
		t.queues = append(t.queues, nil)
	}
	return len(t.queues)
}

// queueCount returns the number of queues of topic, or 0 if it does not
// exist.
func (s *store) queueCount(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.topics[topic]; ok {
		return len(t.queues)
	}
	return 0
}

// allocCommitLocked reserves a commit-log position for m.
func (s *store) allocCommitLocked(m *storedMessage) {
	m.CommitOffset = s.nextCommit
	s.nextCommit += int64(m.encodedSize(formatProperties(m.Props)))
}

// pickQueueLocked resolves a requested queue id: negative picks one round
// robin. It reports false when id is out of range.
func pickQueueLocked(t *topicData, id int32) (int32, bool) {
	if id < 0 {
		q := int32(t.next % len(t.queues))
		t.next++
		return q, true
	}
	return id, int(id) < len(t.queues)
}

// appendLocked stores m at the tail of its queue, assigns its offsets and
// store time, and wakes pullers waiting on that queue. m.QueueID must be a
// valid queue of m.Topic.
func (s *store) appendLocked(m *storedMessage, now time.Time) {
	t := s.ensureTopicLocked(m.Topic)
	q := t.queues[m.QueueID]
	m.QueueOffset = int64(len(q))
	m.StoreTimestamp = now.UnixMilli()
	s.allocCommitLocked(m)
	t.queues[m.QueueID] = append(q, m)
	s.commitLog[m.CommitOffset] = m
	k := queueKey{m.Topic, m.QueueID}
	if ch, ok := s.arrivals[k]; ok {
		close(ch)
		delete(s.arrivals, k)
	}
}

// arrival returns a channel closed when the next message lands in the queue.
func (s *store) arrival(topic string, id int32) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := queueKey{topic, id}
	ch, ok := s.arrivals[k]
	if !ok {
		ch = make(chan struct{})
		s.arrivals[k] = ch
	}
	return ch
}

// lookup returns the stored message at a commit-log offset.
func (s *store) lookup(commitOffset int64) (*storedMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.commitLog[commitOffset]
	if !ok {
		return nil, false
	}
	return m.clone(), true
}

// pullResult is what a pull found.
type pullResult struct {
	msgs       []*storedMessage
	nextOffset int64
	maxOffset  int64
	// scanned counts messages looked at, matched or not.
	scanned int
	// moved reports an offset outside [0, maxOffset].
	moved bool
}

// pull reads up to max messages from offset whose tags match filter (nil
// matches all). maxBytes bounds the total body size of a reply (at least
// one message is returned).
func (s *store) pull(topic string, id int32, offset int64, max int, maxBytes int, filter map[string]bool) pullResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topics[topic]
	if !ok || int(id) >= len(t.queues) || id < 0 {
		return pullResult{moved: offset != 0}
	}
	q := t.queues[id]
	res := pullResult{maxOffset: int64(len(q)), nextOffset: offset}
	if offset < 0 || offset > int64(len(q)) {
		res.moved = true
		if offset < 0 {
			res.nextOffset = 0
		} else {
			res.nextOffset = int64(len(q))
		}
		return res
	}
	const maxScan = 4096
	size := 0
	for i := offset; i < int64(len(q)) && len(res.msgs) < max && res.scanned < maxScan; i++ {
		m := q[i]
		if len(res.msgs) > 0 && size+len(m.Body) > maxBytes {
			break
		}
		res.scanned++
		res.nextOffset = i + 1
		if filter != nil && !filter[m.Props[propTags]] {
			continue
		}
		size += len(m.Body)
		res.msgs = append(res.msgs, m.clone())
	}
	return res
}

// maxOffset returns the length of a queue (0 if unknown).
func (s *store) maxOffset(topic string, id int32) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.topics[topic]; ok && id >= 0 && int(id) < len(t.queues) {
		return int64(len(t.queues[id]))
	}
	return 0
}

// searchOffset returns the offset of the first message stored at or after
// ts (Unix milliseconds), or the queue length if there is none.
func (s *store) searchOffset(topic string, id int32, ts int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topics[topic]
	if !ok || id < 0 || int(id) >= len(t.queues) {
		return 0
	}
	q := t.queues[id]
	return int64(sort.Search(len(q), func(i int) bool { return q[i].StoreTimestamp >= ts }))
}

// consumerOffset returns a group's committed offset.
func (s *store) consumerOffset(group, topic string, id int32) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	off, ok := s.offsets[offsetKey{group, topic, id}]
	return off, ok
}

// setConsumerOffset records a group's committed offset.
func (s *store) setConsumerOffset(group, topic string, id int32, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offsets[offsetKey{group, topic, id}] = off
}

// topicNames returns the names of all topics, sorted.
func (s *store) topicNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.topics))
	for n := range s.topics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// topicMessages returns copies of a topic's messages in commit order.
func (s *store) topicMessages(topic string) []*storedMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topics[topic]
	if !ok {
		return nil
	}
	var out []*storedMessage
	for _, q := range t.queues {
		for _, m := range q {
			out = append(out, m.clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CommitOffset < out[j].CommitOffset })
	return out
}

// addHalf records a half message and returns its commit-log offset and
// position in the half queue.
func (s *store) addHalf(h *halfMessage, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := h.msg
	m.Topic = halfTopic
	m.QueueID = 0
	m.QueueOffset = s.halfOffset
	s.halfOffset++
	m.StoreTimestamp = now.UnixMilli()
	s.allocCommitLocked(m)
	h.lastCheck = now
	s.halves[m.CommitOffset] = h
}

// takeHalf removes and returns the half message at a commit-log offset. If
// none is there it falls back to matching the unique message key.
func (s *store) takeHalf(commitOffset int64, uniqKey string) (*halfMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.halves[commitOffset]; ok {
		delete(s.halves, commitOffset)
		return h, true
	}
	if uniqKey == "" {
		return nil, false
	}
	for off, h := range s.halves {
		if h.msg.Props[propUniqKey] == uniqKey {
			delete(s.halves, off)
			return h, true
		}
	}
	return nil, false
}

// halfList returns copies of the unsettled half messages in commit order.
func (s *store) halfList() []*halfMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*halfMessage, 0, len(s.halves))
	for _, h := range s.halves {
		c := *h
		c.msg = h.msg.clone()
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].msg.CommitOffset < out[j].msg.CommitOffset })
	return out
}

// lockQueues locks each queue for clientID when it is free, expired or
// already held by clientID, and returns the indexes of the queues locked.
func (s *store) lockQueues(group, clientID string, keys []queueKey, now time.Time, ttl time.Duration) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ok []int
	for i, k := range keys {
		lk := offsetKey{group, k.topic, k.id}
		cur, held := s.locks[lk]
		if held && cur.clientID != clientID && now.Before(cur.expires) {
			continue
		}
		s.locks[lk] = lockEntry{clientID: clientID, expires: now.Add(ttl)}
		ok = append(ok, i)
	}
	return ok
}

// unlockQueues releases the queues clientID holds.
func (s *store) unlockQueues(group, clientID string, keys []queueKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		lk := offsetKey{group, k.topic, k.id}
		if cur, held := s.locks[lk]; held && cur.clientID == clientID {
			delete(s.locks, lk)
		}
	}
}

// lockOwner returns the client holding a queue lock, if live.
func (s *store) lockOwner(group, topic string, id int32, now time.Time) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, held := s.locks[offsetKey{group, topic, id}]
	if !held || !now.Before(cur.expires) {
		return "", false
	}
	return cur.clientID, true
}

// parseTagFilter turns a subscription expression ("*", "", "a || b") into
// a tag set; nil means "all".
func parseTagFilter(expr string) map[string]bool {
	expr = strings.TrimSpace(expr)
	if expr == "" || expr == "*" {
		return nil
	}
	set := make(map[string]bool)
	for tag := range strings.SplitSeq(expr, "||") {
		if tag = strings.TrimSpace(tag); tag != "" {
			set[tag] = true
		}
	}
	if len(set) == 0 {
		return nil
	}
	return set
}

// delayFor returns the delay of a delay level, scaled.
func delayFor(level int, scale float64) time.Duration {
	if level <= 0 {
		return 0
	}
	if level > maxDelayLevel {
		level = maxDelayLevel
	}
	return time.Duration(float64(delayLadder[level-1]) * scale)
}

// atoi32 parses a decimal int32, returning def on error.
func atoi32(s string, def int32) int32 {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return def
	}
	return int32(v)
}

// atoi64 parses a decimal int64, returning def on error.
func atoi64(s string, def int64) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return def
	}
	return v
}

// settled reports whether group has committed, on every queue of topics,
// an offset at the queue's end, and no delayed message is due later in
// any of them.
func (s *store) settled(group string, topics []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tp := range topics {
		if s.scheduled[tp] > 0 {
			return false
		}
		t, ok := s.topics[tp]
		if !ok {
			continue
		}
		for q, msgs := range t.queues {
			if len(msgs) == 0 {
				continue
			}
			off, ok := s.offsets[offsetKey{group, tp, int32(q)}]
			if !ok || off < int64(len(msgs)) {
				return false
			}
		}
	}
	return true
}
