package consumer

import (
	"os"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// TestMain keeps the client library's logs to errors: the tests that start
// a client (the live tests, the Example) would print dozens of INFO lines.
func TestMain(m *testing.M) {
	rlog.SetLogLevel("error")
	os.Exit(m.Run())
}
