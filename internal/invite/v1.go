package invite

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Payload is a v1 invite: what the token carries and the owner key signed. Nonce is ours,
// not the original's: without it two invites for the same mesh and role made in the same
// second were the same token (and the second insert failed on invites.token). It is not
// part of the canonical string, so clients that verify the signature still do.
type Payload struct {
	V           int    `json:"v"`
	MeshID      string `json:"mesh_id"`
	MeshSlug    string `json:"mesh_slug"`
	BrokerURL   string `json:"broker_url"`
	ExpiresAt   int64  `json:"expires_at"` // unix seconds
	MeshRootKey string `json:"mesh_root_key"`
	Role        string `json:"role"`
	OwnerPubkey string `json:"owner_pubkey"`
	Nonce       string `json:"nonce,omitempty"`
	Signature   string `json:"signature"`
}

// Canonical is the v1 string the owner key signs:
// v|mesh_id|mesh_slug|broker_url|expires_at|mesh_root_key|role|owner_pubkey.
func (p Payload) Canonical() string {
	return strings.Join([]string{strconv.Itoa(p.V), p.MeshID, p.MeshSlug, p.BrokerURL,
		strconv.FormatInt(p.ExpiresAt, 10), p.MeshRootKey, p.Role, p.OwnerPubkey}, "|")
}

// Errors of Verify and DecodeToken; the wrapped message says more.
var (
	ErrBadSignature = errors.New("invite signature does not verify")
	ErrMalformed    = errors.New("malformed invite token")
	ErrTooLarge     = errors.New("invite token too large")
)

// Size bounds of untrusted invites. A token the broker makes is well under 1 KiB; the bounds
// leave room for long slugs and URLs while keeping a hostile input cheap to reject.
const (
	MaxTokenChars = 4096 // a token, a link, or an URL holding one
	maxFieldBytes = 1024 // each string field of a payload
)

// NewNonce returns 16 random bytes as 32 hex characters.
func NewNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}

// Sign sets p.OwnerPubkey from secret and p.Signature to the ed25519 signature (128 hex) of
// p's canonical string.
func (p *Payload) Sign(secret ed25519.PrivateKey) {
	p.OwnerPubkey = hex.EncodeToString(secret.Public().(ed25519.PublicKey))
	p.Signature = hex.EncodeToString(ed25519.Sign(secret, []byte(p.Canonical())))
}

// Verify checks p.Signature (128 hex) over p's canonical string against p.OwnerPubkey (64
// hex). Whether that key is the mesh's is the caller's check.
func (p Payload) Verify() error {
	pub, err := ParsePublicKey(p.OwnerPubkey)
	if err != nil {
		return fmt.Errorf("%w: owner_pubkey: %v", ErrBadSignature, err)
	}
	if len(p.Signature) != 2*ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not %d hex characters", ErrBadSignature, 2*ed25519.SignatureSize)
	}
	sig, err := hex.DecodeString(p.Signature)
	if err != nil {
		return fmt.Errorf("%w: signature is not hex", ErrBadSignature)
	}
	if !ed25519.Verify(pub, []byte(p.Canonical()), sig) {
		return ErrBadSignature
	}
	return nil
}

// Token is the invite token: base64url without padding of the payload's JSON (signature
// included).
func (p Payload) Token() string {
	raw, _ := json.Marshal(p) // a struct of strings and ints always marshals
	return base64.RawURLEncoding.EncodeToString(raw)
}

// Link is the CLI's join link for a token.
func Link(token string) string { return "ic://join/" + token }

// TokenFromLink returns the token inside s: s itself, the tail of an ic://join/<token>
// link, or the last path segment of an http(s) URL whose path ends in /join/<token>.
// Anything else is returned trimmed, as is.
func TokenFromLink(s string) string {
	s = strings.TrimSpace(s)
	if t, ok := strings.CutPrefix(s, "ic://join/"); ok {
		return strings.TrimSuffix(t, "/")
	}
	if strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") {
		u, err := url.Parse(s)
		if err != nil {
			return s
		}
		segs := strings.Split(strings.Trim(u.Path, "/"), "/")
		if n := len(segs); n >= 2 && segs[n-2] == "join" {
			return segs[n-1]
		}
	}
	return s
}

// DecodeToken reads an invite token (padded or unpadded base64url), an ic://join/<token>
// link or an http(s) URL ending in /join/<token>, and returns its payload. It checks the
// shape (version 1, every field present and bounded, keys and signature in hex of the right
// length) but not the signature: call Verify.
func DecodeToken(s string) (Payload, error) {
	if len(s) > MaxTokenChars {
		return Payload{}, fmt.Errorf("%w: over %d characters", ErrTooLarge, MaxTokenChars)
	}
	tok := strings.TrimRight(TokenFromLink(s), "=")
	if tok == "" {
		return Payload{}, fmt.Errorf("%w: empty", ErrMalformed)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return Payload{}, fmt.Errorf("%w: not base64url: %v", ErrMalformed, err)
	}
	var p Payload
	if err := json.Unmarshal(raw, &p); err != nil {
		return Payload{}, fmt.Errorf("%w: not a JSON payload: %v", ErrMalformed, err)
	}
	if err := p.CheckShape(); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// CheckShape checks what DecodeToken checks of a payload, without the signature.
func (p Payload) CheckShape() error {
	if p.V != 1 {
		return fmt.Errorf("%w: version %d, want 1", ErrMalformed, p.V)
	}
	fields := []struct{ name, v string }{
		{"mesh_id", p.MeshID}, {"mesh_slug", p.MeshSlug}, {"broker_url", p.BrokerURL},
		{"mesh_root_key", p.MeshRootKey}, {"role", p.Role}, {"owner_pubkey", p.OwnerPubkey},
		{"signature", p.Signature},
	}
	for _, f := range fields {
		if f.v == "" {
			return fmt.Errorf("%w: %s missing", ErrMalformed, f.name)
		}
		if len(f.v) > maxFieldBytes {
			return fmt.Errorf("%w: %s over %d bytes", ErrMalformed, f.name, maxFieldBytes)
		}
	}
	if len(p.Nonce) > maxFieldBytes {
		return fmt.Errorf("%w: nonce over %d bytes", ErrMalformed, maxFieldBytes)
	}
	if p.ExpiresAt <= 0 {
		return fmt.Errorf("%w: expires_at missing", ErrMalformed)
	}
	if _, err := ParsePublicKey(p.OwnerPubkey); err != nil {
		return fmt.Errorf("%w: owner_pubkey: %v", ErrMalformed, err)
	}
	if len(p.Signature) != 2*ed25519.SignatureSize || !isHex(p.Signature) {
		return fmt.Errorf("%w: signature is not %d hex characters", ErrMalformed, 2*ed25519.SignatureSize)
	}
	return nil
}

// ParsePublicKey reads an ed25519 public key written as 64 hex characters.
func ParsePublicKey(h string) (ed25519.PublicKey, error) {
	if len(h) != 2*ed25519.PublicKeySize || !isHex(h) {
		return nil, fmt.Errorf("not %d hex characters", 2*ed25519.PublicKeySize)
	}
	b, _ := hex.DecodeString(h)
	return ed25519.PublicKey(b), nil
}

// ParseSecretKey reads an ed25519 secret key as stored in meshes.owner_secret_key: 128 hex
// characters (seed and public key).
func ParseSecretKey(h string) (ed25519.PrivateKey, error) {
	if len(h) != 2*ed25519.PrivateKeySize || !isHex(h) {
		return nil, fmt.Errorf("owner secret key is not %d hex characters", 2*ed25519.PrivateKeySize)
	}
	b, _ := hex.DecodeString(h)
	return ed25519.PrivateKey(b), nil
}

// IsPubkeyHex reports whether s is 64 hex characters (an ed25519 public key).
func IsPubkeyHex(s string) bool { return len(s) == 2*ed25519.PublicKeySize && isHex(s) }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
