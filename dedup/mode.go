package dedup

import "fmt"

// Mode names the guarantee a store gives: which of the ways to consume
// described in the package documentation it runs. Package sqldedup selects
// its mode with it (sqldedup.Mode is this type), redisdedup's lease store is
// always in Lease mode, and the conformance suite (dedup/deduptest) takes the
// mode of the store under test from it.
type Mode int

const (
	// Transactional inserts the dedup row in the handler's own database
	// transaction (see [Tx]): the handler's database effects happen
	// exactly once. The zero value.
	Transactional Mode = iota
	// Lease claims the key with an owner-fenced, renewed lease (see
	// [LeaseKeeper] and [Fence]), for handlers whose effects are outside
	// the database.
	Lease
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case Transactional:
		return "transactional"
	case Lease:
		return "lease"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}
