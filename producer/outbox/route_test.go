package outbox_test

import (
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/producer/outbox"
)

// The producer routes outbox rows with a sharding key or a delay level.
var _ outbox.RouteSender = (*producer.Producer)(nil)
