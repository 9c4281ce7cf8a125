package invite

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// CanonicalV2 is the v2 string the owner key signs, computed from the invite row:
// v=2|<mesh_id>|<invite_id>|<expires_at unix seconds, floor>|<role>|<owner_pubkey>.
func CanonicalV2(meshID, inviteID string, expiresAt time.Time, role, ownerPubkey string) string {
	return fmt.Sprintf("v=2|%s|%s|%d|%s|%s", meshID, inviteID, floorUnix(expiresAt), role, ownerPubkey)
}

// floorUnix is t in whole unix seconds, rounded down also before 1970.
func floorUnix(t time.Time) int64 { return t.Truncate(0).Unix() }

// Capability is what invites.capability_v2 stores: the v2 canonical string and its ed25519
// signature (128 hex).
type Capability struct {
	Canonical string `json:"canonical"`
	Signature string `json:"signature"`
}

// SignCapability signs canonical with secret and returns the capability as JSON.
func SignCapability(canonical string, secret ed25519.PrivateKey) string {
	raw, _ := json.Marshal(Capability{Canonical: canonical,
		Signature: hex.EncodeToString(ed25519.Sign(secret, []byte(canonical)))})
	return string(raw)
}

// ParseCapability reads a stored capability; both fields must be present.
func ParseCapability(s string) (Capability, error) {
	var c Capability
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return Capability{}, fmt.Errorf("%w: capability is not JSON: %v", ErrMalformed, err)
	}
	if c.Canonical == "" || c.Signature == "" {
		return Capability{}, fmt.Errorf("%w: capability lacks canonical or signature", ErrMalformed)
	}
	return c, nil
}

// Verify checks that c is the signature of want by ownerPubkey (64 hex).
func (c Capability) Verify(want, ownerPubkey string) error {
	if c.Canonical != want {
		return fmt.Errorf("%w: canonical %q, recomputed %q", ErrBadSignature, c.Canonical, want)
	}
	pub, err := ParsePublicKey(ownerPubkey)
	if err != nil {
		return fmt.Errorf("%w: owner_pubkey: %v", ErrBadSignature, err)
	}
	sig, err := hex.DecodeString(c.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not %d hex characters", ErrBadSignature, 2*ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, []byte(c.Canonical), sig) {
		return ErrBadSignature
	}
	return nil
}
