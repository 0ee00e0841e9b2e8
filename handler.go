package idemq

import "context"

// Handler consumes one message. A nil error acknowledges the message; any
// other error asks the transport for a redelivery, unless it is marked
// [Permanent].
type Handler interface {
	Handle(ctx context.Context, msg *Message) error
}

// HandlerFunc adapts an ordinary function to a [Handler].
type HandlerFunc func(ctx context.Context, msg *Message) error

// Handle calls f(ctx, msg).
func (f HandlerFunc) Handle(ctx context.Context, msg *Message) error { return f(ctx, msg) }

// Middleware wraps a Handler with behaviour that runs around it.
type Middleware func(Handler) Handler

// Chain wraps h with mws so that mws[0] is the outermost: a message passes
// through mws[0], then mws[1], and so on, then h. Chain returns
// [ErrNilHandler] if h is nil or a middleware returns a nil handler, and
// [ErrNilMiddleware] if a middleware is nil.
func Chain(h Handler, mws ...Middleware) (Handler, error) {
	if isNilHandler(h) {
		return nil, ErrNilHandler
	}
	for i := len(mws) - 1; i >= 0; i-- {
		if mws[i] == nil {
			return nil, ErrNilMiddleware
		}
		h = mws[i](h)
		if isNilHandler(h) {
			return nil, ErrNilHandler
		}
	}
	return h, nil
}

func isNilHandler(h Handler) bool {
	if h == nil {
		return true
	}
	if f, ok := h.(HandlerFunc); ok && f == nil {
		return true
	}
	return false
}
