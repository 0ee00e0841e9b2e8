package middleware

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/idemq/idemq"
)

// PanicError is the error Recover returns for a handler that panicked. It is
// retryable: the transport redelivers the message.
//
// PanicError deliberately does not unwrap to the panic value, so a value
// such as idemq.Permanent(...) passed to panic is never mistaken for a
// control-flow error. Use Value to inspect it.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the goroutine's stack at the panic, from runtime/debug.Stack.
	Stack []byte
}

// Error returns the panic value; the stack is in Stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("idemq: handler panicked: %v", e.Value)
}

// Recover returns a middleware that turns a panic in the handlers it wraps
// into a *PanicError, so that a panic never crashes the process. (A panic in
// an orderly RocketMQ consumer's callback kills the process; in a concurrent
// one it leaves the message unacknowledged until the consume timeout.)
//
// Standard puts Recover both outermost, to protect the process from panics
// in the middleware itself, and innermost, so that a handler's panic
// becomes an ordinary error inside the dedup transaction and rolls it back.
func Recover() idemq.Middleware {
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = &PanicError{Value: v, Stack: debug.Stack()}
				}
			}()
			return next.Handle(ctx, msg)
		})
	}
}
