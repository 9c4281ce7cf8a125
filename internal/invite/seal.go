package invite

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/nacl/box"
)

// DecodeKey32 reads 32 bytes written as base64url, padded or not (a root key, an x25519
// public key).
func DecodeKey32(s string) ([32]byte, error) {
	var k [32]byte
	if len(s) > 64 {
		return k, fmt.Errorf("key longer than 64 characters")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return k, fmt.Errorf("key is not base64url: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("key is %d bytes, want 32", len(b))
	}
	copy(k[:], b)
	return k, nil
}

// NewRootKey returns a fresh 32-byte mesh root key as base64url without padding.
func NewRootKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// SealRootKey seals the mesh root key (base64url) to the recipient's x25519 public key with
// crypto_box_seal (an anonymous sender: only the recipient's secret key opens it) and
// returns the box as base64url without padding.
func SealRootKey(rootKeyB64url string, recipient [32]byte) (string, error) {
	root, err := DecodeKey32(rootKeyB64url)
	if err != nil {
		return "", fmt.Errorf("mesh root key: %w", err)
	}
	sealed, err := box.SealAnonymous(nil, root[:], &recipient, rand.Reader)
	if err != nil {
		return "", fmt.Errorf("seal root key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}
