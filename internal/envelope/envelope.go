// Package envelope is the claudemesh CLI's direct-message encryption, for Go peers (the
// demo peer, tests, the load tool): crypto_box (X25519 + XSalsa20-Poly1305) between
// ed25519 identities converted to Curve25519 as libsodium does, base64 (standard, padded)
// nonce and ciphertext. The broker itself never calls it: it routes ciphertext it cannot
// read.
package envelope

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/nacl/box"
)

// CurvePublic converts an ed25519 public key (hex) to X25519
// (crypto_sign_ed25519_pk_to_curve25519).
func CurvePublic(edHex string) (*[32]byte, error) {
	b, err := hex.DecodeString(edHex)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not an ed25519 public key: %q", edHex)
	}
	p, err := new(edwards25519.Point).SetBytes(b)
	if err != nil {
		return nil, fmt.Errorf("not an ed25519 public key: %w", err)
	}
	var out [32]byte
	copy(out[:], p.BytesMontgomery())
	return &out, nil
}

// CurveSecret converts an ed25519 secret key to X25519 (crypto_sign_ed25519_sk_to_curve25519).
func CurveSecret(sk ed25519.PrivateKey) *[32]byte {
	h := sha512.Sum512(sk.Seed())
	var out [32]byte
	copy(out[:], h[:32])
	out[0] &= 248
	out[31] &= 127
	out[31] |= 64
	return &out
}

// Seal encrypts msg from sender to the recipient's ed25519 key; it returns base64 nonce and
// ciphertext as the CLI sends them.
func Seal(msg []byte, recipientEdHex string, sender ed25519.PrivateKey) (nonce, ciphertext string, err error) {
	pub, err := CurvePublic(recipientEdHex)
	if err != nil {
		return "", "", err
	}
	var n [24]byte
	_, _ = rand.Read(n[:])
	ct := box.Seal(nil, msg, &n, pub, CurveSecret(sender))
	return base64.StdEncoding.EncodeToString(n[:]), base64.StdEncoding.EncodeToString(ct), nil
}

// ErrOpen means the ciphertext does not decrypt with these keys.
var ErrOpen = errors.New("message does not decrypt (tampered, or sealed to another key)")

// Open decrypts a push's nonce and ciphertext from senderEdHex with the recipient's key.
func Open(nonceB64, ciphertextB64, senderEdHex string, recipient ed25519.PrivateKey) ([]byte, error) {
	n, err1 := base64.StdEncoding.DecodeString(nonceB64)
	ct, err2 := base64.StdEncoding.DecodeString(ciphertextB64)
	if err1 != nil || err2 != nil || len(n) != 24 {
		return nil, ErrOpen
	}
	pub, err := CurvePublic(senderEdHex)
	if err != nil {
		return nil, err
	}
	var nonce [24]byte
	copy(nonce[:], n)
	pt, ok := box.Open(nil, ct, &nonce, pub, CurveSecret(recipient))
	if !ok {
		return nil, ErrOpen
	}
	return pt, nil
}
