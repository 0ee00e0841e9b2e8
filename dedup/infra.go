package dedup

import "errors"

// Infrastructure failures. A store wraps a failure that is not the handler's
// fault in one of these, so that middleware can tell "the handler failed"
// (an attempt, perhaps a dead letter) from "the store could not decide"
// (retry without counting an attempt, and pause consumption while the
// store is down).
var (
	// ErrUnavailable marks a failure to reach the store: a refused or
	// dropped connection, a server that is down or restarting, a timeout
	// talking to it. Nothing is recorded; the delivery is retried later and
	// the failure is not an attempt.
	ErrUnavailable = errors.New("dedup: store unavailable")
	// ErrConflict marks a transient conflict between concurrent deliveries
	// that the store gave up retrying in place: a deadlock victim, a
	// serialization failure, a lock wait timeout. Nothing is recorded; the
	// delivery is retried and the failure is not an attempt.
	ErrConflict = errors.New("dedup: transient conflict")
)

// infraError wraps a cause in one of the infrastructure kinds above while
// keeping the cause reachable through errors.Is and errors.As.
type infraError struct {
	kind  error
	cause error
}

func (e *infraError) Error() string {
	if e.cause == nil {
		return e.kind.Error()
	}
	return e.kind.Error() + ": " + e.cause.Error()
}

func (e *infraError) Unwrap() []error { return []error{e.kind, e.cause} }

// Unavailable wraps err so that errors.Is(result, ErrUnavailable) holds and
// err stays reachable. It returns nil for a nil err.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return &infraError{kind: ErrUnavailable, cause: err}
}

// Conflict wraps err so that errors.Is(result, ErrConflict) holds and err
// stays reachable. It returns nil for a nil err.
func Conflict(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrConflict) {
		return err
	}
	return &infraError{kind: ErrConflict, cause: err}
}

// IsInfrastructure reports whether err is a store failure that is not the
// handler's: ErrUnavailable or ErrConflict. Such a failure is retried and is
// never counted as an attempt nor dead-lettered.
func IsInfrastructure(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrConflict)
}
