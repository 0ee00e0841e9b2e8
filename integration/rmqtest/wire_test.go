package rmqtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.QueuesPerTopic != 4 || c.TimeScale != 1 || c.MaxTransactionChecks != 15 ||
		c.LongPollMax != DefaultLongPollMax || c.MaxMessageSize != 4<<20 || c.Logger == nil {
		t.Fatalf("defaults %+v", c)
	}
	for _, bad := range []Config{
		{QueuesPerTopic: -1}, {TimeScale: -1}, {MaxMessageSize: -5}, {LongPollMax: -time.Second},
	} {
		if _, err := New(bad); !errors.Is(err, errBadConfig) {
			t.Errorf("New(%+v) = %v, want errBadConfig", bad, err)
		}
	}
}

func TestCloseIsIdempotentAndEndsLongPoll(t *testing.T) {
	b, err := New(Config{LongPollMax: time.Minute, Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	w := dialWire(t, b)
	w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "t"}, nil)
	_, ch := w.start(codePullMessage, pullExt("g", "t", 0, 0, time.Minute), nil)
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a held pull")
	}
	w.expectClosed(5 * time.Second)
	select {
	case resp := <-ch:
		t.Fatalf("held pull answered after Close: %v", resp)
	default:
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// routeQueues looks up topic's route and returns its queue count, or the
// reply's code when it is not a success.
func routeQueues(t *testing.T, b *Broker, w *wireClient, topic string) (int, int16) {
	t.Helper()
	resp := w.call(codeGetRouteInfoByTopic, map[string]string{"topic": topic}, nil)
	if resp.Code != respSuccess {
		return 0, resp.Code
	}
	var route struct {
		QueueDatas []struct {
			BrokerName     string `json:"brokerName"`
			ReadQueueNums  int    `json:"readQueueNums"`
			WriteQueueNums int    `json:"writeQueueNums"`
			Perm           int    `json:"perm"`
		} `json:"queueDatas"`
		BrokerDatas []struct {
			BrokerName  string            `json:"brokerName"`
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerDatas"`
	}
	if err := json.Unmarshal(resp.Body, &route); err != nil {
		t.Fatal(err)
	}
	if len(route.QueueDatas) != 1 || route.QueueDatas[0].ReadQueueNums != route.QueueDatas[0].WriteQueueNums ||
		route.QueueDatas[0].Perm != 6 {
		t.Fatalf("%s: queue data %+v", topic, route.QueueDatas)
	}
	if len(route.BrokerDatas) != 1 || route.BrokerDatas[0].BrokerAddrs["0"] != b.Addr() ||
		route.BrokerDatas[0].BrokerName != route.QueueDatas[0].BrokerName {
		t.Fatalf("%s: broker data %+v", topic, route.BrokerDatas)
	}
	return route.QueueDatas[0].ReadQueueNums, respSuccess
}

func createTopicExt(topic string, queues int) map[string]string {
	n := strconv.Itoa(queues)
	return map[string]string{"topic": topic, "defaultTopic": "TBW102", "readQueueNums": n,
		"writeQueueNums": n, "perm": "6", "topicFilterType": "SINGLE_TAG", "topicSysFlag": "0", "order": "false"}
}

// TestTopicsAreNotCreatedOnLookup documents the strict default: like a real
// name server, a topic nobody created is answered TOPIC_NOT_EXIST (17) on
// a route lookup and a send to it is refused; UPDATE_AND_CREATE_TOPIC (the
// request of `mqadmin updateTopic`) creates it, and a group's retry topic
// is the broker's own.
func TestTopicsAreNotCreatedOnLookup(t *testing.T) {
	b := NewTest(t, Config{QueuesPerTopic: 3, Topics: []string{"preset"}})
	w := dialWire(t, b)
	if _, code := routeQueues(t, b, w, "orders"); code != respTopicNotExist {
		t.Fatalf("unknown topic: code %d, want %d", code, respTopicNotExist)
	}
	if r := w.call(codeSendMessage, sendExt("pg", "orders", -1, ""), []byte("x")); r.Code != respTopicNotExist {
		t.Fatalf("send to an unknown topic: code %d %q", r.Code, r.Remark)
	}
	if _, code := routeQueues(t, b, w, "%DLQ%grp"); code != respTopicNotExist {
		t.Fatalf("dead-letter topic before any dead letter: code %d", code)
	}
	if n, code := routeQueues(t, b, w, "preset"); code != respSuccess || n != 3 {
		t.Fatalf("Config.Topics: %d queues, code %d", n, code)
	}
	if n, code := routeQueues(t, b, w, "%RETRY%grp"); code != respSuccess || n != 1 {
		t.Fatalf("retry topic: %d queues, code %d", n, code)
	}

	if r := w.call(codeUpdateAndCreateTopic, createTopicExt("orders", 5), nil); r.Code != respSuccess {
		t.Fatalf("create: %d %s", r.Code, r.Remark)
	}
	if n, code := routeQueues(t, b, w, "orders"); code != respSuccess || n != 5 {
		t.Fatalf("created topic: %d queues, code %d", n, code)
	}
	// An update grows the topic and never shrinks it.
	w.call(codeUpdateAndCreateTopic, createTopicExt("orders", 8), nil)
	w.call(codeUpdateAndCreateTopic, createTopicExt("orders", 2), nil)
	if n, _ := routeQueues(t, b, w, "orders"); n != 8 {
		t.Fatalf("after updates: %d queues, want 8", n)
	}
	if r := w.call(codeSendMessage, sendExt("pg", "orders", -1, ""), []byte("x")); r.Code != respSuccess {
		t.Fatalf("send to the created topic: %d %s", r.Code, r.Remark)
	}
	for _, bad := range []map[string]string{createTopicExt("bad topic!", 4), createTopicExt("zero", 0), createTopicExt(ClusterName, 4)} {
		if r := w.call(codeUpdateAndCreateTopic, bad, nil); r.Code == respSuccess {
			t.Fatalf("create %v succeeded", bad)
		}
	}
	if resp := w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "bad topic!"}, nil); resp.Code != respTopicNotExist {
		t.Fatalf("invalid topic: code %d", resp.Code)
	}
	if got := strings.Join(b.Topics(), ","); got != "%RETRY%grp,orders,preset" {
		t.Fatalf("topics %s", got)
	}
	if st := b.Stats(); st.TopicsCreated != 3 {
		t.Fatalf("TopicsCreated %d, want 3", st.TopicsCreated)
	}
	if err := b.CreateTopic("direct", 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := routeQueues(t, b, w, "direct"); n != 3 {
		t.Fatalf("CreateTopic: %d queues", n)
	}
	resp := w.call(codeGetBrokerClusterInfo, nil, nil)
	if resp.Code != respSuccess || !bytes.Contains(resp.Body, []byte(b.Addr())) {
		t.Fatalf("cluster info: %d %s", resp.Code, resp.Body)
	}
}

// TestAutoCreateTopics documents the lenient option: every topic exists on
// its first route lookup or send.
func TestAutoCreateTopics(t *testing.T) {
	b := NewTest(t, Config{QueuesPerTopic: 3, AutoCreateTopics: true})
	w := dialWire(t, b)
	if n, code := routeQueues(t, b, w, "orders"); code != respSuccess || n != 3 {
		t.Fatalf("lookup: %d queues, code %d", n, code)
	}
	if r := w.call(codeSendMessage, sendExt("pg", "sent", -1, ""), []byte("x")); r.Code != respSuccess {
		t.Fatalf("send: %d %s", r.Code, r.Remark)
	}
	if got := strings.Join(b.Topics(), ","); got != "orders,sent" {
		t.Fatalf("topics %s", got)
	}
}

func TestSendPullAndOffsets(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"wire"}})
	w := dialWire(t, b)
	props := "TAGS\x01red\x02UNIQ_KEY\x01ABC123\x02KEYS\x01k1 k2\x02"
	resp := w.call(codeSendMessage, sendExt("pg", "wire", 2, props), []byte("body-1"))
	if resp.Code != respSuccess {
		t.Fatalf("send: %d %s", resp.Code, resp.Remark)
	}
	if resp.ext("queueId") != "2" || resp.ext("queueOffset") != "0" {
		t.Fatalf("send ext %v", resp.ExtFields)
	}
	sentID := resp.ext("msgId")
	id, err := primitive.UnmarshalMsgID([]byte(sentID))
	if err != nil || id.Addr != "127.0.0.1" || id.Port != int(b.port) {
		t.Fatalf("msgId %q: %+v %v", resp.ext("msgId"), id, err)
	}

	resp = w.call(codePullMessage, pullExt("cg", "wire", 2, 0, 0), nil)
	if resp.Code != respSuccess || resp.ext("nextBeginOffset") != "1" || resp.ext("maxOffset") != "1" || resp.ext("minOffset") != "0" {
		t.Fatalf("pull: %d %v", resp.Code, resp.ExtFields)
	}
	msgs := primitive.DecodeMessage(resp.Body)
	if len(msgs) != 1 {
		t.Fatalf("decoded %d messages", len(msgs))
	}
	m := msgs[0]
	if string(m.Body) != "body-1" || m.Topic != "wire" || m.GetTags() != "red" || m.MsgId != "ABC123" ||
		m.Queue.QueueId != 2 || m.QueueOffset != 0 || m.OffsetMsgId != sentID ||
		m.StoreHost != b.Addr() || m.CommitLogOffset != id.Offset {
		t.Fatalf("decoded %v", m)
	}

	// Offsets: a group that committed nothing gets QUERY_NOT_FOUND, so
	// the client applies its ConsumeFromWhere (see TestStartPositions).
	q := w.call(codeQueryConsumerOffset, map[string]string{"consumerGroup": "cg", "topic": "wire", "queueId": "2"}, nil)
	if q.Code != respQueryNotFound {
		t.Fatalf("query: %d %v", q.Code, q.ExtFields)
	}
	if q := w.call(codeQueryConsumerOffset, map[string]string{"consumerGroup": "cg", "topic": "nope", "queueId": "0"}, nil); q.Code != respQueryNotFound {
		t.Fatalf("query unknown topic: %d", q.Code)
	}
	w.send(codeUpdateConsumerOffset, map[string]string{"consumerGroup": "cg", "topic": "wire", "queueId": "2", "commitOffset": "1"}, nil)
	q = w.call(codeQueryConsumerOffset, map[string]string{"consumerGroup": "cg", "topic": "wire", "queueId": "2"}, nil)
	if q.ext("offset") != "1" || b.ConsumerOffset("cg", "wire", 2) != 1 || b.ConsumerOffset("cg", "wire", 1) != -1 {
		t.Fatalf("after update: %v / %d", q.ExtFields, b.ConsumerOffset("cg", "wire", 2))
	}
	if r := w.call(codeGetMaxOffset, map[string]string{"topic": "wire", "queueId": "2"}, nil); r.ext("offset") != "1" {
		t.Fatalf("max offset %v", r.ExtFields)
	}
	if r := w.call(codeGetMinOffset, map[string]string{"topic": "wire", "queueId": "2"}, nil); r.ext("offset") != "0" {
		t.Fatalf("min offset %v", r.ExtFields)
	}
	if r := w.call(codeSearchOffsetByTimestamp, map[string]string{"topic": "wire", "queueId": "2", "timestamp": "0"}, nil); r.ext("offset") != "0" {
		t.Fatalf("search offset(0) %v", r.ExtFields)
	}
	future := itoa(time.Now().Add(time.Hour).UnixMilli())
	if r := w.call(codeSearchOffsetByTimestamp, map[string]string{"topic": "wire", "queueId": "2", "timestamp": future}, nil); r.ext("offset") != "1" {
		t.Fatalf("search offset(future) %v", r.ExtFields)
	}

	// A pull with the commit-offset flag records the consumer's offset.
	ext := pullExt("cg2", "wire", 2, 1, 0)
	ext["sysFlag"], ext["commitOffset"] = "1", "1"
	if r := w.call(codePullMessage, ext, nil); r.Code != respPullNotFound || r.ext("nextBeginOffset") != "1" {
		t.Fatalf("pull at end: %d %v", r.Code, r.ExtFields)
	}
	if got := b.ConsumerOffset("cg2", "wire", 2); got != 1 {
		t.Fatalf("pull commit offset recorded %d", got)
	}
	// Out-of-range offsets.
	if r := w.call(codePullMessage, pullExt("cg", "wire", 2, 7, 0), nil); r.Code != respPullOffsetMoved || r.ext("nextBeginOffset") != "1" {
		t.Fatalf("pull beyond end: %d %v", r.Code, r.ExtFields)
	}
	if r := w.call(codePullMessage, pullExt("cg", "nope", 0, 0, 0), nil); r.Code != respTopicNotExist {
		t.Fatalf("pull unknown topic: %d", r.Code)
	}
	if r := w.call(codePullMessage, pullExt("cg", "wire", 9, 0, 0), nil); r.Code != respSystemError {
		t.Fatalf("pull bad queue: %d", r.Code)
	}
	if s := b.Stats(); s.Sends != 1 || s.Pulls < 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSendV2AndBatch(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"v2"}})
	w := dialWire(t, b)
	v2 := map[string]string{"a": "pg", "b": "v2", "e": "1", "f": "0", "g": "0", "h": "0",
		"i": "UNIQ_KEY\x01U1\x02", "j": "0", "k": "false", "m": "false"}
	if r := w.call(codeSendMessageV2, v2, []byte("x")); r.Code != respSuccess || r.ext("queueId") != "1" {
		t.Fatalf("v2 send: %d %s %v", r.Code, r.Remark, r.ExtFields)
	}
	var batch []*primitive.Message
	for _, body := range []string{"one", "two", "three"} {
		m := primitive.NewMessage("v2", []byte(body))
		m.WithKeys([]string{body})
		batch = append(batch, m)
	}
	v2["m"], v2["i"] = "true", ""
	r := w.call(codeSendBatchMessage, v2, producer.MarshalMessageBatch(batch...))
	if r.Code != respSuccess || len(strings.Split(r.ext("msgId"), ",")) != 3 || r.ext("queueOffset") != "1" {
		t.Fatalf("batch send: %d %s %v", r.Code, r.Remark, r.ExtFields)
	}
	got := b.Messages("v2")
	if len(got) != 4 {
		t.Fatalf("%d stored", len(got))
	}
	for i, want := range []string{"x", "one", "two", "three"} {
		if string(got[i].Body) != want || got[i].Queue.QueueId != 1 || got[i].QueueOffset != int64(i) {
			t.Fatalf("message %d: %q q%d o%d", i, got[i].Body, got[i].Queue.QueueId, got[i].QueueOffset)
		}
	}
	if got[2].GetKeys() != "two" || got[0].MsgId != "U1" {
		t.Fatalf("properties lost: %v %v", got[2].GetProperties(), got[0].MsgId)
	}
	// A malformed batch body is refused with MESSAGE_ILLEGAL.
	if r := w.call(codeSendBatchMessage, v2, []byte{0, 0, 0, 9, 1}); r.Code != respMessageIllegal {
		t.Fatalf("bad batch: %d", r.Code)
	}
}

func TestLongPollWakesOnSend(t *testing.T) {
	b := NewTest(t, Config{LongPollMax: time.Minute, Topics: []string{"lp"}})
	consumer, producer := dialWire(t, b), dialWire(t, b)
	producer.call(codeGetRouteInfoByTopic, map[string]string{"topic": "lp"}, nil)
	_, ch := consumer.start(codePullMessage, pullExt("cg", "lp", 0, 0, 30*time.Second), nil)
	select {
	case r := <-ch:
		t.Fatalf("pull answered before any message: %d", r.Code)
	case <-time.After(100 * time.Millisecond):
	}
	if r := producer.call(codeSendMessage, sendExt("pg", "lp", 0, ""), []byte("wake")); r.Code != respSuccess {
		t.Fatalf("send %d", r.Code)
	}
	r := consumer.wait(ch, 5*time.Second)
	if r.Code != respSuccess || string(primitive.DecodeMessage(r.Body)[0].Body) != "wake" {
		t.Fatalf("pull: %d", r.Code)
	}
}

func TestLongPollTimesOut(t *testing.T) {
	b := NewTest(t, Config{LongPollMax: 50 * time.Millisecond, Topics: []string{"lp"}})
	w := dialWire(t, b)
	w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "lp"}, nil)
	r := w.call(codePullMessage, pullExt("cg", "lp", 0, 0, 20*time.Second), nil)
	if r.Code != respPullNotFound || r.ext("nextBeginOffset") != "0" {
		t.Fatalf("pull: %d %v", r.Code, r.ExtFields)
	}
}

func TestPullTagFilter(t *testing.T) {
	b := NewTest(t, Config{Topics: []string{"tags"}})
	w := dialWire(t, b)
	for _, tag := range []string{"a", "b", "a"} {
		w.call(codeSendMessage, sendExt("pg", "tags", 0, "TAGS\x01"+tag+"\x02"), []byte(tag))
	}
	ext := pullExt("cg", "tags", 0, 0, 0)
	ext["sysFlag"], ext["subscription"] = "4", "b"
	r := w.call(codePullMessage, ext, nil)
	msgs := primitive.DecodeMessage(r.Body)
	if r.Code != respSuccess || len(msgs) != 1 || msgs[0].GetTags() != "b" || r.ext("nextBeginOffset") != "3" {
		t.Fatalf("filtered pull: %d %d %v", r.Code, len(msgs), r.ExtFields)
	}
	ext["subscription"] = "zzz"
	if r := w.call(codePullMessage, ext, nil); r.Code != respPullRetryImmediately || r.ext("nextBeginOffset") != "3" {
		t.Fatalf("unmatched pull: %d %v", r.Code, r.ExtFields)
	}
}

func heartbeatBody(clientID string, consumerGroups []string, producerGroups []string) []byte {
	type sub struct {
		Topic     string `json:"topic"`
		SubString string `json:"subString"`
	}
	type cd struct {
		GroupName string `json:"groupName"`
		Subs      []sub  `json:"subscriptionDataSet"`
	}
	type pd struct {
		GroupName string `json:"groupName"`
	}
	hb := struct {
		ClientID  string `json:"clientID"`
		Producers []pd   `json:"producerDataSet"`
		Consumers []cd   `json:"consumerDataSet"`
	}{ClientID: clientID, Producers: []pd{}, Consumers: []cd{}}
	for _, g := range consumerGroups {
		hb.Consumers = append(hb.Consumers, cd{GroupName: g, Subs: []sub{{Topic: "t", SubString: "*"}}})
	}
	for _, g := range producerGroups {
		hb.Producers = append(hb.Producers, pd{GroupName: g})
	}
	body, _ := json.Marshal(hb)
	return body
}

func consumerList(t *testing.T, w *wireClient, group string) []string {
	t.Helper()
	r := w.call(codeGetConsumerListByGroup, map[string]string{"consumerGroup": group}, nil)
	var list struct {
		IDs []string `json:"consumerIdList"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil {
		t.Fatal(err)
	}
	return list.IDs
}

func TestMembershipAndNotify(t *testing.T) {
	b := NewTest(t, Config{})
	a, c := dialWire(t, b), dialWire(t, b)
	if r := a.call(codeHeartBeat, nil, heartbeatBody("client-a", []string{"g"}, nil)); r.Code != respSuccess {
		t.Fatalf("heartbeat: %d %s", r.Code, r.Remark)
	}
	c.call(codeHeartBeat, nil, heartbeatBody("client-c", []string{"g"}, nil))
	n := a.nextPushed(5 * time.Second)
	if n.Code != codeNotifyConsumerIdsChanged || n.ext("consumerGroup") != "g" || !n.isOneway() {
		t.Fatalf("notification %+v", n)
	}
	if got := strings.Join(consumerList(t, a, "g"), ","); got != "client-a,client-c" {
		t.Fatalf("members %s", got)
	}
	// A repeated heartbeat is not a change.
	c.call(codeHeartBeat, nil, heartbeatBody("client-c", []string{"g"}, nil))
	// Leaving by heartbeat (the client no longer lists the group).
	c.call(codeHeartBeat, nil, heartbeatBody("client-c", nil, nil))
	if n := a.nextPushed(5 * time.Second); n.Code != codeNotifyConsumerIdsChanged {
		t.Fatalf("notification %+v", n)
	}
	if got := strings.Join(b.ConsumerIDs("g"), ","); got != "client-a" {
		t.Fatalf("members after leave %s", got)
	}
	// Leaving by closing the connection.
	c.call(codeHeartBeat, nil, heartbeatBody("client-c", []string{"g"}, nil))
	a.nextPushed(5 * time.Second)
	_ = c.nc.Close()
	a.nextPushed(5 * time.Second)
	if got := strings.Join(consumerList(t, a, "g"), ","); got != "client-a" {
		t.Fatalf("members after close %s", got)
	}
	// UNREGISTER_CLIENT.
	a.call(codeUnregisterClient, map[string]string{"clientID": "client-a", "consumerGroup": "g"}, nil)
	if got := consumerList(t, a, "g"); len(got) != 0 {
		t.Fatalf("members after unregister %v", got)
	}
	if r := a.call(codeHeartBeat, nil, []byte("{not json")); r.Code != respSystemError {
		t.Fatalf("bad heartbeat: %d", r.Code)
	}
}

func lockBodyJSON(group, client string, queues ...int) []byte {
	lb := lockBody{ConsumerGroup: group, ClientID: client}
	for _, q := range queues {
		lb.MQSet = append(lb.MQSet, messageQueue{Topic: "t", BrokerName: BrokerName, QueueID: int32(q)})
	}
	body, _ := json.Marshal(lb)
	return body
}

func lockedQueues(t *testing.T, r *command) []int32 {
	t.Helper()
	var res struct {
		OK []messageQueue `json:"lockOKMQSet"`
	}
	if err := json.Unmarshal(r.Body, &res); err != nil {
		t.Fatal(err)
	}
	out := []int32{}
	for _, mq := range res.OK {
		if mq.BrokerName != BrokerName || mq.Topic != "t" {
			t.Fatalf("lock reply queue %+v", mq)
		}
		out = append(out, mq.QueueID)
	}
	return out
}

func TestOrderlyLocks(t *testing.T) {
	b := NewTest(t, Config{LockExpiry: 200 * time.Millisecond, Topics: []string{"t"}})
	w := dialWire(t, b)
	w.call(codeGetRouteInfoByTopic, map[string]string{"topic": "t"}, nil)
	str := func(q []int32) string { bs, _ := json.Marshal(q); return string(bs) }

	if got := lockedQueues(t, w.call(codeLockBatchMQ, nil, lockBodyJSON("g", "A", 0, 1))); str(got) != "[0,1]" {
		t.Fatalf("A locked %v", got)
	}
	if got := lockedQueues(t, w.call(codeLockBatchMQ, nil, lockBodyJSON("g", "B", 1, 2))); str(got) != "[2]" {
		t.Fatalf("B locked %v, want only 2", got)
	}
	// Another group is independent.
	if got := lockedQueues(t, w.call(codeLockBatchMQ, nil, lockBodyJSON("other", "B", 1))); str(got) != "[1]" {
		t.Fatalf("other group locked %v", got)
	}
	// Re-locking renews; unlocking by a non-owner does nothing.
	if got := lockedQueues(t, w.call(codeLockBatchMQ, nil, lockBodyJSON("g", "A", 0, 1))); str(got) != "[0,1]" {
		t.Fatalf("A relocked %v", got)
	}
	w.call(codeUnlockBatchMQ, nil, lockBodyJSON("g", "B", 1))
	if owner, _ := b.QueueLockOwner("g", "t", 1); owner != "A" {
		t.Fatalf("owner after foreign unlock %q", owner)
	}
	w.call(codeUnlockBatchMQ, nil, lockBodyJSON("g", "A", 1))
	if got := lockedQueues(t, w.call(codeLockBatchMQ, nil, lockBodyJSON("g", "B", 1))); str(got) != "[1]" {
		t.Fatalf("B after unlock %v", got)
	}
	// Expiry frees queue 0 for B.
	time.Sleep(300 * time.Millisecond)
	if _, live := b.QueueLockOwner("g", "t", 0); live {
		t.Fatal("lock still live after expiry")
	}
	if got := lockedQueues(t, w.call(codeLockBatchMQ, nil, lockBodyJSON("g", "B", 0))); str(got) != "[0]" {
		t.Fatalf("B after expiry %v", got)
	}
	if r := w.call(codeLockBatchMQ, nil, []byte("[")); r.Code != respSystemError {
		t.Fatalf("bad lock body: %d", r.Code)
	}
}

// pullOne pulls a queue from offset and returns the first message.
func pullOne(t *testing.T, w *wireClient, topic string, queue int, offset int64) *primitive.MessageExt {
	t.Helper()
	r := w.call(codePullMessage, pullExt("cg", topic, queue, offset, 0), nil)
	if r.Code != respSuccess {
		t.Fatalf("pull %s/%d@%d: %d %s", topic, queue, offset, r.Code, r.Remark)
	}
	return primitive.DecodeMessage(r.Body)[0]
}

func sendBackExt(group string, m *primitive.MessageExt, delayLevel, maxReconsume int) map[string]string {
	return map[string]string{
		"group": group, "offset": itoa(m.CommitLogOffset), "delayLevel": itoa(int64(delayLevel)),
		"originMsgId": m.MsgId, "originTopic": m.Topic, "unitMode": "false",
		"maxReconsumeTimes": itoa(int64(maxReconsume)),
	}
}

func TestSendBackRetryAndDLQ(t *testing.T) {
	b := NewTest(t, Config{TimeScale: 0.001, Topics: []string{"sb"}})
	w := dialWire(t, b)
	w.call(codeSendMessage, sendExt("pg", "sb", 0, "UNIQ_KEY\x01U-1\x02TAGS\x01x\x02"), []byte("payload"))
	orig := pullOne(t, w, "sb", 0, 0)

	if r := w.call(codeConsumerSendMsgBack, sendBackExt("g", orig, 0, 2), nil); r.Code != respSuccess {
		t.Fatalf("send back: %d %s", r.Code, r.Remark)
	}
	// Level 3+0 = 10 s, scaled to 10 ms.
	var retries []*primitive.MessageExt
	deadline := time.Now().Add(5 * time.Second)
	for len(retries) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		retries = b.RetryMessages("g")
	}
	if len(retries) != 1 {
		t.Fatal("no retry copy")
	}
	rc := pullOne(t, w, "%RETRY%g", 0, 0)
	if rc.ReconsumeTimes != 1 || string(rc.Body) != "payload" || rc.MsgId != "U-1" || rc.GetTags() != "x" ||
		rc.GetProperty("RETRY_TOPIC") != "sb" || rc.GetProperty("ORIGIN_MESSAGE_ID") != orig.OffsetMsgId ||
		rc.GetProperty("REAL_TOPIC") != "%RETRY%g" || rc.GetProperty("DELAY") != "" || rc.Topic != "%RETRY%g" {
		t.Fatalf("retry copy %v props %v", rc, rc.GetProperties())
	}
	// The client sends a retry copy back with its topic restored.
	rc.Topic = "sb"
	w.call(codeConsumerSendMsgBack, sendBackExt("g", rc, 1, 2), nil)
	deadline = time.Now().Add(5 * time.Second)
	for len(b.RetryMessages("g")) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	rc2 := pullOne(t, w, "%RETRY%g", 0, 1)
	if rc2.ReconsumeTimes != 2 || rc2.GetProperty("ORIGIN_MESSAGE_ID") != orig.OffsetMsgId || rc2.GetProperty("RETRY_TOPIC") != "sb" {
		t.Fatalf("second retry copy %v", rc2.GetProperties())
	}
	// reconsumeTimes 2 >= max 2: dead letter, at once.
	w.call(codeConsumerSendMsgBack, sendBackExt("g", rc2, 0, 2), nil)
	dlq := b.DLQ("g")
	if len(dlq) != 1 || dlq[0].ReconsumeTimes != 3 || string(dlq[0].Body) != "payload" || dlq[0].GetProperty("RETRY_TOPIC") != "sb" {
		t.Fatalf("dlq %v", dlq)
	}
	// A negative delay level dead-letters directly (orderly consumers).
	w.call(codeConsumerSendMsgBack, sendBackExt("g", orig, -1, 16), nil)
	if len(b.DLQ("g")) != 2 {
		t.Fatal("delay level -1 did not dead-letter")
	}
	if r := w.call(codeConsumerSendMsgBack, map[string]string{"group": "g", "offset": "999999"}, nil); r.Code != respSystemError {
		t.Fatalf("unknown offset: %d", r.Code)
	}
	if s := b.Stats(); s.SendBacks != 4 || s.DeadLettered != 2 || s.SendBacksFailed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDelayedSendProtocol(t *testing.T) {
	b := NewTest(t, Config{TimeScale: 0.01, Topics: []string{"later"}})
	w := dialWire(t, b)
	r := w.call(codeSendMessage, sendExt("pg", "later", 0, "DELAY\x013\x02"), []byte("d"))
	if r.Code != respSuccess {
		t.Fatalf("send: %d", r.Code)
	}
	if len(b.Messages("later")) != 0 {
		t.Fatal("visible before its delay")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(b.Messages("later")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m := b.Messages("later")[0]
	if m.GetProperty("DELAY") != "" || m.GetProperty("REAL_TOPIC") != "later" || string(m.Body) != "d" {
		t.Fatalf("delivered %v", m.GetProperties())
	}
}

func TestTransactionProtocol(t *testing.T) {
	b := NewTest(t, Config{TransactionCheckInterval: 20 * time.Millisecond, MaxTransactionChecks: 5, Topics: []string{"txt"}})
	w := dialWire(t, b)
	w.call(codeHeartBeat, nil, heartbeatBody("producer-1", nil, []string{"tpg"}))
	props := "TRAN_MSG\x01true\x02PGROUP\x01tpg\x02UNIQ_KEY\x01TX-1\x02"
	ext := sendExt("tpg", "txt", 1, props)
	ext["sysFlag"] = itoa(int64(sysFlagTranPrepared))
	r := w.call(codeSendMessage, ext, []byte("half"))
	if r.Code != respSuccess || r.ext("transactionId") != "TX-1" {
		t.Fatalf("half send: %d %v", r.Code, r.ExtFields)
	}
	if len(b.Messages("txt")) != 0 {
		t.Fatal("half message visible")
	}
	halves := b.HalfMessages()
	if len(halves) != 1 || halves[0].Topic != "txt" || halves[0].Queue.QueueId != 1 {
		t.Fatalf("halves %v", halves)
	}
	// Unsettled: the broker asks the producer.
	chk := w.nextPushed(5 * time.Second)
	if chk.Code != codeCheckTransactionState || !chk.isOneway() {
		t.Fatalf("check %+v", chk)
	}
	cm := primitive.DecodeMessage(chk.Body)
	if len(cm) != 1 || cm[0].Topic != "txt" || cm[0].GetProperty("PGROUP") != "tpg" ||
		chk.ext("commitLogOffset") != itoa(cm[0].CommitLogOffset) || chk.ext("transactionId") != "TX-1" {
		t.Fatalf("check body %v ext %v", cm, chk.ExtFields)
	}
	// "Unknown" keeps it; commit publishes it.
	w.send(codeEndTransaction, map[string]string{"commitLogOffset": chk.ext("commitLogOffset"), "commitOrRollback": "0"}, nil)
	w.send(codeEndTransaction, map[string]string{"commitLogOffset": chk.ext("commitLogOffset"),
		"commitOrRollback": itoa(tranCommit), "fromTransactionCheck": "true", "msgId": "TX-1"}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for len(b.Messages("txt")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("commit never published")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m := b.Messages("txt")[0]
	if m.GetProperty("TRAN_MSG") != "" || m.GetProperty("REAL_TOPIC") != "" || m.Queue.QueueId != 1 ||
		m.MsgId != "TX-1" || m.SysFlag&sysFlagTranMask != sysFlagTranCommit {
		t.Fatalf("committed %v props %v", m, m.GetProperties())
	}
	if len(b.HalfMessages()) != 0 {
		t.Fatal("half message left after commit")
	}
	// Rollback discards; a second END for the same offset is an error.
	ext["properties"] = "TRAN_MSG\x01true\x02PGROUP\x01tpg\x02UNIQ_KEY\x01TX-2\x02"
	r = w.call(codeSendMessage, ext, []byte("half-2"))
	off, _ := primitive.UnmarshalMsgID([]byte(r.ext("msgId")))
	end := map[string]string{"commitLogOffset": itoa(off.Offset), "commitOrRollback": itoa(tranRollback)}
	if r := w.call(codeEndTransaction, end, nil); r.Code != respSuccess {
		t.Fatalf("rollback: %d %s", r.Code, r.Remark)
	}
	if r := w.call(codeEndTransaction, end, nil); r.Code != respSystemError {
		t.Fatalf("second rollback: %d", r.Code)
	}
	if len(b.Messages("txt")) != 1 || len(b.HalfMessages()) != 0 {
		t.Fatal("rollback published or kept the half message")
	}
	if s := b.Stats(); s.Commits != 1 || s.Rollbacks != 1 || s.TransactionChecks < 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestUnknownCode(t *testing.T) {
	b := NewTest(t, Config{})
	w := dialWire(t, b)
	r := w.call(9999, nil, nil)
	if r.Code != respRequestCodeNotSupported || !strings.Contains(r.Remark, "9999") {
		t.Fatalf("unknown code: %d %q", r.Code, r.Remark)
	}
}

// TestConsumerExpiry documents membership: a consumer whose heartbeats
// stop for ConsumerExpiry is dropped from its group, the other members are
// told (NOTIFY_CONSUMER_IDS_CHANGED) and its connection is dropped, its
// held long poll answered first. The survivor then rebalances onto every
// queue.
func TestConsumerExpiry(t *testing.T) {
	b := NewTest(t, Config{ConsumerExpiry: 300 * time.Millisecond, Topics: []string{"exp"}})
	stale, live := dialWire(t, b), dialWire(t, b)
	stale.call(codeHeartBeat, nil, heartbeatBody("stale", []string{"g"}, nil))
	live.call(codeHeartBeat, nil, heartbeatBody("live", []string{"g"}, nil))
	stale.nextPushed(5 * time.Second) // live joined
	_, held := stale.start(codePullMessage, pullExt("g", "exp", 0, 0, time.Minute), nil)

	// live keeps heartbeating until it hears that stale is gone.
	var n *command
	for deadline := time.Now().Add(10 * time.Second); n == nil; {
		if time.Now().After(deadline) {
			t.Fatal("no notification within 10 s")
		}
		live.call(codeHeartBeat, nil, heartbeatBody("live", []string{"g"}, nil))
		select {
		case n = <-live.pushed:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if n.Code != codeNotifyConsumerIdsChanged || n.ext("consumerGroup") != "g" {
		t.Fatalf("notification %+v", n)
	}
	if got := strings.Join(consumerList(t, live, "g"), ","); got != "live" {
		t.Fatalf("members after expiry %s", got)
	}
	if r := stale.wait(held, 5*time.Second); r.Code != respServiceNotAvailable {
		t.Fatalf("held pull of the expired consumer answered %d", r.Code)
	}
	stale.expectClosed(5 * time.Second)
	if st := b.Stats(); st.ConsumersExpired != 1 {
		t.Fatalf("ConsumersExpired %d", st.ConsumersExpired)
	}
}

// TestRetryTopicSendPastMaxGoesToDLQ documents retry routing: a plain send
// into %RETRY%group (rocketmq-client-go's fallback when a send-back fails)
// whose reconsumeTimes reached maxReconsumeTimes is stored in %DLQ%group,
// as the broker's handleRetryAndDLQ does; below it, the message goes to
// the retry topic after its delay level.
func TestRetryTopicSendPastMaxGoesToDLQ(t *testing.T) {
	b := NewTest(t, Config{TimeScale: 0.001})
	w := dialWire(t, b)
	send := func(reconsume, maxReconsume int, body string) {
		t.Helper()
		ext := sendExt("CID_RMQ_SYS_INNER", "%RETRY%g", 0, "DELAY\x013\x02RETRY_TOPIC\x01orders\x02")
		ext["reconsumeTimes"] = strconv.Itoa(reconsume)
		if maxReconsume >= 0 {
			ext["maxReconsumeTimes"] = strconv.Itoa(maxReconsume)
		}
		if r := w.call(codeSendMessage, ext, []byte(body)); r.Code != respSuccess {
			t.Fatalf("send %s: %d %s", body, r.Code, r.Remark)
		}
	}
	send(2, 3, "retry")
	send(3, 3, "dead")
	send(15, -1, "retry-default") // the group default is 16
	send(16, -1, "dead-default")
	eventually(t, 5*time.Second, "the retry copies", func() bool { return len(b.RetryMessages("g")) == 2 })
	var retried, dead []string
	for _, m := range b.RetryMessages("g") {
		retried = append(retried, string(m.Body))
	}
	for _, m := range b.DLQ("g") {
		dead = append(dead, string(m.Body))
		if m.GetProperty("DELAY") != "" || m.GetProperty("RETRY_TOPIC") != "orders" {
			t.Fatalf("dead letter properties %v", m.GetProperties())
		}
	}
	sort.Strings(retried) // delayed copies land in the order their timers fire
	sort.Strings(dead)
	if strings.Join(retried, ",") != "retry,retry-default" || strings.Join(dead, ",") != "dead,dead-default" {
		t.Fatalf("retry %v, dead %v", retried, dead)
	}
	if st := b.Stats(); st.DeadLettered != 2 {
		t.Fatalf("DeadLettered %d", st.DeadLettered)
	}
}

// TestSettled: a group is settled once it committed every queue's end and
// no retry is still scheduled for it.
func TestSettled(t *testing.T) {
	b := NewTest(t, Config{TimeScale: 0.01, Topics: []string{"st"}})
	w := dialWire(t, b)
	if !b.Settled("g", "st") {
		t.Fatal("an empty topic is not settled")
	}
	w.call(codeSendMessage, sendExt("pg", "st", 1, ""), []byte("x"))
	if b.Settled("g", "st") {
		t.Fatal("settled with an unconsumed message")
	}
	m := pullOne(t, w, "st", 1, 0)
	w.call(codeConsumerSendMsgBack, sendBackExt("g", m, 3, 16), nil) // due in 100 ms
	w.send(codeUpdateConsumerOffset, map[string]string{"consumerGroup": "g", "topic": "st", "queueId": "1", "commitOffset": "1"}, nil)
	eventually(t, 5*time.Second, "the retry copy", func() bool { return len(b.RetryMessages("g")) == 1 })
	if b.Settled("g", "st") {
		t.Fatal("settled with an unconsumed retry copy")
	}
	w.send(codeUpdateConsumerOffset, map[string]string{"consumerGroup": "g", "topic": "%RETRY%g", "queueId": "0", "commitOffset": "1"}, nil)
	eventually(t, 5*time.Second, "settled", func() bool { return b.Settled("g", "st") })
}
