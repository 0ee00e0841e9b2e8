package middleware

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// TracerName is the instrumentation scope name of the spans Tracing starts.
const TracerName = "github.com/idemq/idemq/middleware"

// Span attributes Tracing adds beyond the messaging semantic conventions.
const (
	// AttrAttempt is the delivery's 1-based attempt (after Attempts raised
	// it).
	AttrAttempt = attribute.Key("idemq.attempt")
	// AttrOutcome is the delivery's outcome (see the Outcome constants).
	AttrOutcome = attribute.Key("idemq.outcome")
	// AttrDedupKey is the delivery's dedup key.
	AttrDedupKey = attribute.Key("idemq.dedup_key")
)

// Tracing returns a middleware that starts one consumer span per delivery,
// named "process <topic>", with tracer provider tp (otel's global provider
// if nil). The span carries the OpenTelemetry messaging attributes
// (messaging.system=rocketmq, messaging.destination.name,
// messaging.message.id, messaging.consumer.group.name, the RocketMQ tag and
// keys, the body size) plus AttrAttempt, AttrDedupKey and AttrOutcome. A
// failed delivery records the error and sets the span status to Error; a
// busy key, which is not a failure, does not.
//
// If the message's properties carry a W3C trace context (a "traceparent"
// property, as written by a producer that propagates one), the span links
// to the producer's span.
func Tracing(tp trace.TracerProvider) idemq.Middleware {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	tracer := tp.Tracer(TracerName)
	prop := propagation.TraceContext{}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			ctx, d := ensureDelivery(ctx)
			opts := []trace.SpanStartOption{
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					semconv.MessagingSystemRocketMQ,
					semconv.MessagingOperationTypeProcess,
					semconv.MessagingOperationName("process"),
					semconv.MessagingDestinationName(msg.Topic),
					semconv.MessagingMessageID(msg.ID),
					semconv.MessagingConsumerGroupName(msg.Group),
					semconv.MessagingMessageBodySize(len(msg.Body)),
				),
			}
			if msg.Tags != "" {
				opts = append(opts, trace.WithAttributes(semconv.MessagingRocketMQMessageTag(msg.Tags)))
			}
			if len(msg.Keys) > 0 {
				opts = append(opts, trace.WithAttributes(semconv.MessagingRocketMQMessageKeys(msg.Keys...)))
			}
			if len(msg.Properties) > 0 {
				pctx := prop.Extract(context.Background(), propagation.MapCarrier(msg.Properties))
				if sc := trace.SpanContextFromContext(pctx); sc.IsValid() {
					opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
				}
			}
			ctx, span := tracer.Start(ctx, "process "+msg.Topic, opts...)
			defer span.End()

			err := next.Handle(ctx, msg)
			span.SetAttributes(
				AttrAttempt.Int(msg.Attempt),
				AttrDedupKey.String(msg.DedupKey()),
				AttrOutcome.String(outcome(d, err)),
			)
			if err != nil {
				span.RecordError(err)
				if !errors.Is(err, dedup.ErrBusy) {
					span.SetStatus(codes.Error, err.Error())
				}
			}
			return err
		})
	}
}
