package rmqprops

import (
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

func TestIsSystem(t *testing.T) {
	for _, name := range []string{primitive.PropertyDelayTimeLevel, primitive.PropertyRetryTopic, primitive.PropertyUniqueClientMessageIdKeyIndex, "TRACE_CONTEXT"} {
		if !IsSystem(name) {
			t.Errorf("IsSystem(%q) = false", name)
		}
	}
	for _, name := range []string{"IDEMQ_MSG_ID", "order_id", "", "delay"} {
		if IsSystem(name) {
			t.Errorf("IsSystem(%q) = true", name)
		}
	}
}
