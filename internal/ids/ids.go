// Package ids mints the opaque identifiers the broker hands to clients: 32 characters from
// the 62-character alphabet 0-9A-Za-z, the shape the original broker used, but drawn from
// crypto/rand (the original used Math.random).
package ids

import (
	"crypto/rand"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Length is the number of characters in an id: 32 base62 characters ≈ 190 bits.
const Length = 32

// New returns a fresh random id.
func New() string {
	var buf [Length]byte
	out := make([]byte, 0, Length)
	for len(out) < Length {
		// Rejection sampling keeps the distribution uniform: 248 = 4*62 is the largest
		// multiple of 62 that fits in a byte.
		_, _ = rand.Read(buf[:]) // never fails since Go 1.24: it crashes the program instead
		for _, b := range buf {
			if b < 248 && len(out) < Length {
				out = append(out, alphabet[b%62])
			}
		}
	}
	return string(out)
}
