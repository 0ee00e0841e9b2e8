package consumer

import (
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/rmqprops"
)

// retryTopicPrefix starts the name of a group's retry topic.
const retryTopicPrefix = "%RETRY%"

// IsSystemProperty reports whether name is a property RocketMQ reserves for
// itself, which ToMessage leaves out of idemq.Message.Properties: such a
// property describes one stored copy (its retry topic, delay level,
// transaction state, client message ID), not the message, and a dead letter
// re-published with it would be delayed, treated as a half message or
// rejected by the producer.
func IsSystemProperty(name string) bool { return rmqprops.IsSystem(name) }

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
		if rmqprops.IsSystem(k) {
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
