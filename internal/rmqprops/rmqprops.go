// Package rmqprops knows RocketMQ's reserved message property names.
package rmqprops

import "github.com/apache/rocketmq-client-go/v2/primitive"

// system holds the property names RocketMQ reserves for itself: those of
// the Go client and of the broker.
var system = map[string]bool{}

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
		system[k] = true
	}
}

// MaxDelayLevel is the highest delay level of RocketMQ's default ladder
// (1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h):
// producer.MaxDelayLevel, and the outbox's limit.
const MaxDelayLevel = 18

// IsSystem reports whether name is a property RocketMQ reserves for itself.
// A user property with such a name would change how the broker treats the
// message; on a received message it describes one stored copy (its retry
// topic, delay level, transaction state), not the message.
func IsSystem(name string) bool { return system[name] }
