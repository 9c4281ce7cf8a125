package invite

import "crypto/rand"

// CodeAlphabet has no 0/O, 1/I: codes are read and typed by people.
const CodeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// CodeLength is the length of a short code: 32^8 = 2^40 codes.
const CodeLength = 8

// NewCode returns a fresh short code from crypto/rand. The alphabet has 32 letters, so a
// random byte modulo 32 is uniform.
func NewCode() string {
	var b [CodeLength]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	for i := range b {
		b[i] = CodeAlphabet[b[i]%byte(len(CodeAlphabet))]
	}
	return string(b[:])
}
