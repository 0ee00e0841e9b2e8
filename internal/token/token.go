// Package token makes the random owner tokens that idemq's leases and
// claims write into a store, so that an owner-checked update matches only
// the holder's own rows or keys.
package token

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// New returns 16 random bytes from crypto/rand as 32 lower-case hex
// digits.
func New() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("owner token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Short returns n random bytes as 2n hex digits, for names that only need
// to differ between processes (a relay's default ID). It never fails: on
// the (documented as impossible) failure of crypto/rand it returns zeros.
func Short(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
