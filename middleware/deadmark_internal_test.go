package middleware

import (
	"context"
	"testing"

	"github.com/idemq/idemq/dedup"
)

// mapStore is a store and ledger of a type that cannot be compared.
type mapStore struct {
	dedup.Ledger
	m map[string]bool
}

func (mapStore) Process(context.Context, dedup.Request, dedup.Func) (dedup.Result, error) {
	return dedup.Result{Outcome: dedup.Processed}, nil
}

// sameStore never panics on values that cannot be compared, and tells a
// pointer store from itself.
func TestSameStoreDoesNotPanic(t *testing.T) {
	a, b := mapStore{m: map[string]bool{}}, mapStore{m: map[string]bool{}}
	if sameStore(a, b) {
		t.Error("two map-holding values reported the same store")
	}
	p := &scriptedStore{}
	if sameStore(p, newFakeLedger()) {
		t.Error("a store and a different ledger reported the same")
	}
}
