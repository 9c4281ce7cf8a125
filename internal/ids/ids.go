// Package ids mints the opaque identifiers the broker hands to clients: 32 characters from
// the 62-character alphabet 0-9A-Za-z, the shape the original broker used, but drawn from
// crypto/rand (the original used Math.random).
package ids

import (
	"crypto/rand"
	"time"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Length is the number of characters in an id: 32 base62 characters ≈ 190 bits.
const Length = 32

// New returns a fresh random id.
func New() string {
	var out [Length]byte
	fillRandom(out[:])
	return string(out[:])
}

// fillRandom fills b with random characters of the alphabet.
func fillRandom(b []byte) {
	var buf [Length]byte
	for n := 0; n < len(b); {
		// Rejection sampling keeps the distribution uniform: 248 = 4*62 is the largest
		// multiple of 62 that fits in a byte.
		_, _ = rand.Read(buf[:]) // never fails since Go 1.24: it crashes the program instead
		for _, c := range buf {
			if c < 248 && n < len(b) {
				b[n] = alphabet[c%62]
				n++
			}
		}
	}
}

// timeChars is the width of NewTimeOrdered's time prefix: 62^8 ms ≈ 6 900 years from 1970.
const timeChars = 8

// NewTimeOrdered returns an id of the same shape whose first 8 characters encode the current
// Unix time in milliseconds (the alphabet is in byte order, so ids sort by creation time to
// the millisecond) followed by 24 random characters (≈ 143 bits). Message ids use it: rows
// keyed by them are inserted at the right edge of their indexes, where Postgres skips the
// descent and keeps the hot pages few, instead of at a random page each.
func NewTimeOrdered() string {
	return timeOrderedAt(time.Now().UnixMilli())
}

func timeOrderedAt(ms int64) string {
	var b [Length]byte
	for i := timeChars - 1; i >= 0; i-- {
		b[i] = alphabet[ms%62]
		ms /= 62
	}
	fillRandom(b[timeChars:])
	return string(b[:])
}
