package consumer

import (
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
)

// retryTopicPrefix starts the name of a group's retry topic.
const retryTopicPrefix = "%RETRY%"

// systemProperties are the property names RocketMQ reserves for itself
// (those of the Go client and of the broker). ToMessage leaves them out of
// idemq.Message.Properties: they describe one stored copy (its retry
// topic, delay level, transaction state, client message ID), not the
// message, and a dead letter re-published with them would be delayed,
// treated as a half message or rejected by the producer.
var systemProperties = map[string]bool{}

func init() {
	for _, k := range []string{
		primitive.PropertyKeys, primitive.PropertyTags, primitive.PropertyWaitStoreMsgOk,
		primitive.PropertyDelayTimeLevel, primitive.PropertyRetryTopic, primitive.PropertyRealTopic,
		primitive.PropertyRealQueueId, primitive.PropertyTransactionPrepared, primitive.PropertyProducerGroup,
		primitive.PropertyMinOffset, primitive.PropertyMaxOffset, primitive.PropertyBuyerId,
		primitive.PropertyOriginMessageId, primitive.PropertyTransferFlag, primitive.PropertyCorrectionFlag,
		primitive.PropertyMQ2Flag, primitive.PropertyReconsumeTime, primitive.PropertyMsgRegion,
		primitive.PropertyTraceSwitch, primitive.PropertyUniqueClientMessageIdKeyIndex,
		primitive.PropertyMaxReconsumeTimes, primitive.PropertyConsumeStartTime,
		primitive.PropertyTranscationPreparedQueueOffset, primitive.PropertyTranscationCheckTimes,
		primitive.PropertyCheckImmunityTimeInSeconds, primitive.PropertyShardingKey,
		primitive.PropertyTransactionID, primitive.PropertyCorrelationID,
		primitive.PropertyMessageReplyToClient, primitive.PropertyMessageTTL,
		primitive.PropertyReplyMessageArriveTime, primitive.PropertyMsgType, primitive.PropertyCluster,
		// Set by RocketMQ 4.x/5.x brokers, not named by the Go client.
		"INSTANCE_ID", "DUP_INFO", "EXTEND_UNIQ_INFO", "INNER_NUM", "INNER_BASE",
		"INNER_MULTI_DISPATCH", "INNER_MULTI_QUEUE_OFFSET", "TRACE_CONTEXT",
		"__STARTDELIVERTIME", "TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS",
		"TIMER_OUT_MS", "TIMER_ENQUEUE_MS", "TIMER_DEQUEUE_MS", "TIMER_ROLL_TIMES",
		"TIMER_DEL_UNIQKEY", "POP_CK", "POP_CK_OFFSET", "1ST_POP_TIME",
		"DLQ_ORIGIN_TOPIC", "DLQ_ORIGIN_MESSAGE_ID", "BORN_HOST", "BORN_TIMESTAMP",
	} {
		systemProperties[k] = true
	}
}

// IsSystemProperty reports whether name is a property RocketMQ reserves for
// itself, which ToMessage leaves out of idemq.Message.Properties.
func IsSystemProperty(name string) bool { return systemProperties[name] }

// ToMessage converts a message delivered by rocketmq-client-go to the
// transport-neutral idemq.Message that handlers see, for consumer group
// group:
//
//   - ID is the idemq.PropertyMessageID property (the snowflake ID the
//     producer stamped once), or, for a message not produced by idemq,
//     RocketMQ's MsgId (the UNIQ_KEY property, or the stored copy's offset
//     ID when there is none). MsgId survives the broker's retries but not
//     a re-send of a newly built message, so it is only a fallback.
//   - Topic is the original topic; for a retry copy (the client normally
//     restores it already) the RETRY_TOPIC property names it.
//   - Tags and Keys come from the TAGS and KEYS properties (KEYS split on
//     spaces, empty keys dropped).
//   - Properties holds the user properties, PropertyMessageID included;
//     RocketMQ's own (see IsSystemProperty) are left out. The whole
//     message stays reachable through Raw.
//   - Attempt is ReconsumeTimes+1 (at least 1); BornAt is the producer's
//     timestamp (zero if the message has none).
//
// ToMessage copies the body and never panics; a nil ext yields nil.
func ToMessage(ext *primitive.MessageExt, group string) *idemq.Message {
	if ext == nil {
		return nil
	}
	props := ext.GetProperties()
	msg := &idemq.Message{
		ID:      props[idemq.PropertyMessageID],
		Group:   group,
		Topic:   ext.Topic,
		Tags:    props[primitive.PropertyTags],
		Attempt: 1,
		Raw:     ext,
	}
	if msg.ID == "" {
		msg.ID = ext.MsgId
	}
	if msg.ID == "" {
		msg.ID = props[primitive.PropertyUniqueClientMessageIdKeyIndex]
	}
	if strings.HasPrefix(msg.Topic, retryTopicPrefix) {
		if t := props[primitive.PropertyRetryTopic]; t != "" {
			msg.Topic = t
		}
	}
	for k := range strings.SplitSeq(props[primitive.PropertyKeys], primitive.PropertyKeySeparator) {
		if k != "" {
			msg.Keys = append(msg.Keys, k)
		}
	}
	if ext.Body != nil {
		msg.Body = append([]byte(nil), ext.Body...)
	}
	for k, v := range props {
		if systemProperties[k] {
			continue
		}
		if msg.Properties == nil {
			msg.Properties = make(map[string]string, len(props))
		}
		msg.Properties[k] = v
	}
	if ext.ReconsumeTimes > 0 {
		msg.Attempt = int(ext.ReconsumeTimes) + 1
	}
	if ext.BornTimestamp > 0 {
		msg.BornAt = time.UnixMilli(ext.BornTimestamp)
	}
	return msg
}
