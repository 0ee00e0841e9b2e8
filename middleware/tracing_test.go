package middleware

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

func newRecorder(t *testing.T) (*tracetest.SpanRecorder, trace.TracerProvider) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return rec, tp
}

func TestTracingSpan(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus codes.Code
		wantOut    string
	}{
		{"ok", nil, codes.Unset, OutcomeProcessed},
		{"failure", errBoom, codes.Error, OutcomeRetry},
		{"busy", idemq.RetryAfter(time.Second, dedup.ErrBusy), codes.Unset, OutcomeBusy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec, tp := newRecorder(t)
			var inner trace.SpanContext
			h := chain(t, idemq.HandlerFunc(func(ctx context.Context, _ *idemq.Message) error {
				inner = trace.SpanContextFromContext(ctx)
				return tc.err
			}), Tracing(tp))
			msg := testMessage()
			msg.Attempt = 3
			_ = h.Handle(context.Background(), msg)
			spans := rec.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans", len(spans))
			}
			s := spans[0]
			if s.Name() != "process orders" || s.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("span %q kind %s", s.Name(), s.SpanKind())
			}
			if s.SpanContext().SpanID() != inner.SpanID() {
				t.Error("handler context does not carry the delivery span")
			}
			got := map[attribute.Key]attribute.Value{}
			for _, kv := range s.Attributes() {
				got[kv.Key] = kv.Value
			}
			want := map[attribute.Key]string{
				"messaging.system":               "rocketmq",
				"messaging.destination.name":     "orders",
				"messaging.message.id":           "1234567890",
				"messaging.consumer.group.name":  "g1",
				"messaging.operation.type":       "process",
				"messaging.rocketmq.message.tag": "created",
				AttrDedupKey:                     "1234567890",
				AttrOutcome:                      tc.wantOut,
			}
			for k, v := range want {
				if got[k].AsString() != v {
					t.Errorf("%s = %q, want %q", k, got[k].AsString(), v)
				}
			}
			if got[AttrAttempt].AsInt64() != 3 {
				t.Errorf("attempt = %v", got[AttrAttempt])
			}
			if s.Status().Code != tc.wantStatus {
				t.Errorf("status = %v, want %v", s.Status().Code, tc.wantStatus)
			}
			if hasErrEvent := len(s.Events()) > 0 && s.Events()[0].Name == "exception"; hasErrEvent != (tc.err != nil) {
				t.Errorf("error recorded = %v, want %v", hasErrEvent, tc.err != nil)
			}
		})
	}
}

func TestTracingLinksProducerSpan(t *testing.T) {
	rec, tp := newRecorder(t)
	h := chain(t, failing(nil), Tracing(tp))
	msg := testMessage()
	msg.Properties["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := h.Handle(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	links := rec.Ended()[0].Links()
	if len(links) != 1 || links[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("links = %+v", links)
	}
}
