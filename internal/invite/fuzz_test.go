package invite

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

// FuzzDecodeToken: the decoder takes untrusted input and must never panic; what it accepts
// is a well-shaped payload whose token decodes to the same payload again.
func FuzzDecodeToken(f *testing.F) {
	_, sec, _ := ed25519.GenerateKey(rand.Reader)
	p := Payload{V: 1, MeshID: "m", MeshSlug: "s", BrokerURL: "wss://x/ws", ExpiresAt: 1_900_000_000,
		MeshRootKey: NewRootKey(), Role: "member", Nonce: NewNonce()}
	p.Sign(sec)
	for _, s := range []string{p.Token(), Link(p.Token()), "https://a/join/" + p.Token(), "", "ic://join/", "e30", "=", "https://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := DecodeToken(s)
		if err != nil {
			return
		}
		if err := got.CheckShape(); err != nil {
			t.Fatalf("accepted a payload that fails its shape check: %v", err)
		}
		_ = got.Verify()
		again, err := DecodeToken(got.Token())
		if err != nil || again != got {
			t.Fatalf("re-encoded token does not decode to the same payload: %v", err)
		}
	})
}
