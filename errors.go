package idemq

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrNilHandler is returned when a nil handler is given where one is
	// required.
	ErrNilHandler = errors.New("idemq: nil handler")
	// ErrNilMiddleware is returned by Chain for a nil middleware.
	ErrNilMiddleware = errors.New("idemq: nil middleware")
	// ErrEmptyKey is returned for a message whose dedup key is empty.
	ErrEmptyKey = errors.New("idemq: empty dedup key")
	// ErrKeyTooLong is returned for a dedup key longer than MaxKeyLen.
	ErrKeyTooLong = fmt.Errorf("idemq: dedup key longer than %d bytes", MaxKeyLen)
	// ErrInvalidKey is returned for a dedup key that is not valid UTF-8 or
	// holds a NUL byte.
	ErrInvalidKey = errors.New("idemq: dedup key is not valid UTF-8 or contains NUL")
)

// permanentError marks an error that must not be retried.
type permanentError struct{ err error }

func (e *permanentError) Error() string {
	if e.err == nil {
		return "permanent failure"
	}
	return "permanent: " + e.err.Error()
}
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the message goes straight to
// the dead letters (when the DeadLetter middleware is in the chain) and is
// acknowledged. Permanent(nil) is a permanent failure with no cause.
func Permanent(err error) error { return &permanentError{err: err} }

// IsPermanent reports whether err, or any error it wraps, was made by
// [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// RetryAfterError asks the transport to redeliver the message no sooner
// than Delay. It wraps the cause.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry after %s", e.Delay)
	}
	return fmt.Sprintf("retry after %s: %v", e.Delay, e.Err)
}

// Unwrap returns the cause.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter asks for a redelivery after at least d. A transport with coarse
// delays (RocketMQ's delay levels) rounds d up to the next level it has.
func RetryAfter(d time.Duration, err error) error {
	if d < 0 {
		d = 0
	}
	return &RetryAfterError{Delay: d, Err: err}
}

// RetryDelay returns the delay requested by a [RetryAfter] error in err's
// chain, and whether there was one.
func RetryDelay(err error) (time.Duration, bool) {
	var r *RetryAfterError
	if errors.As(err, &r) {
		return r.Delay, true
	}
	return 0, false
}

// ValidateKey reports whether key can be used as a dedup key.
func ValidateKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w (got %d)", ErrKeyTooLong, len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] == 0 {
			return ErrInvalidKey
		}
	}
	if !utf8.ValidString(key) {
		return ErrInvalidKey
	}
	return nil
}
