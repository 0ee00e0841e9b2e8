package middleware

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/idemq/idemq/dedup"
)

// A store that keeps its own dead marks apart from the ledger
// (redisdedup.LeaseStore in front of a sqldedup ledger) would not know the
// keys the ledger buried: a later copy of a buried message would run the
// handler again instead of being skipped. Standard bridges the two (see
// bridgeDeadMarks): a burial also marks the key dead in the store, and a
// dead answer from the store is checked against the ledger, which a
// redrive clears, so that a redriven message is not swallowed by the
// store's stale mark.

// bridgeDeadMarks returns the store and ledger Standard builds its chain
// from: as given, unless the store keeps dead marks of its own
// (dedup.DeadMarker) apart from the ledger and the ledger can say whether
// a key is still dead (dedup.DeadChecker).
func bridgeDeadMarks(store dedup.Store, ledger dedup.Ledger, logger *slog.Logger) (dedup.Store, dedup.Ledger) {
	marker, ok := store.(dedup.DeadMarker)
	if !ok || sameStore(authority(store), ledger) {
		return store, ledger
	}
	checker, ok := ledger.(dedup.DeadChecker)
	if !ok {
		return store, ledger
	}
	return &deadCheckingStore{Store: store, marker: marker, checker: checker},
		&deadMarkingLedger{Ledger: ledger, marker: marker, logger: logger}
}

// sameStore reports whether the store is the ledger itself. Values of a
// type that cannot be compared (a struct holding a map, say) are not the
// same store: comparing them would panic.
func sameStore(s dedup.Store, l dedup.Ledger) bool {
	ls, ok := l.(dedup.Store)
	if !ok || reflect.TypeOf(ls) != reflect.TypeOf(s) || !reflect.TypeOf(s).Comparable() {
		return false
	}
	return any(ls) == any(s)
}

// deadMarkingLedger marks a buried key dead in the store too.
type deadMarkingLedger struct {
	dedup.Ledger
	marker dedup.DeadMarker
	logger *slog.Logger
}

// Bury stores the dead letter, then marks its key dead in the store. The
// mark is a copy of the ledger's: if it cannot be written the burial
// stands, and a later copy of the message may run the handler again.
func (l *deadMarkingLedger) Bury(ctx context.Context, dl *dedup.DeadLetter) (int64, error) {
	id, err := l.Ledger.Bury(ctx, dl)
	if err != nil {
		return id, err
	}
	if merr := l.marker.MarkDead(context.WithoutCancel(ctx), dl.Group, dl.Key); merr != nil {
		l.logger.WarnContext(ctx, "dead letter stored, but the store could not mark its key dead; a later copy of the message may run again",
			slog.String("group", dl.Group), slog.String("key", dl.Key), slog.Any("error", merr))
	}
	return id, nil
}

// deadCheckingStore asks the ledger before it lets the store's dead mark
// skip a delivery.
type deadCheckingStore struct {
	dedup.Store
	marker  dedup.DeadMarker
	checker dedup.DeadChecker
}

// Process is the store's, except that a Duplicate the store answers from a
// dead mark is checked against the ledger: if the ledger no longer holds
// the key dead (it was redriven), the store's mark is cleared and the
// delivery processed.
func (s *deadCheckingStore) Process(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	res, err := s.Store.Process(ctx, req, fn)
	if err != nil || res.Outcome != dedup.Duplicate || !res.Dead {
		return res, err
	}
	dead, err := s.checker.IsDead(ctx, req.Group, req.Key)
	if err != nil {
		return dedup.Result{}, fmt.Errorf("middleware: ask the ledger whether %s/%s is still dead: %w", req.Group, req.Key, err)
	}
	if dead {
		return res, nil
	}
	if err := s.marker.ClearDead(ctx, req.Group, req.Key); err != nil {
		return dedup.Result{}, fmt.Errorf("middleware: clear the store's dead mark of redriven %s/%s: %w", req.Group, req.Key, err)
	}
	return s.Store.Process(ctx, req, fn)
}
