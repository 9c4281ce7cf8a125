package api

import (
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// FuzzParseJoinBody: a /join body is untrusted; parsing never panics, answers one of the
// documented messages, and what it accepts is within the bounds.
func FuzzParseJoinBody(f *testing.F) {
	pk := strings.Repeat("ab", 32)
	for _, s := range []string{
		`{"invite_token":"t","invite_payload":{"v":1,"mesh_id":"m","expires_at":5},"peer_pubkey":"` + pk + `","display_name":"a"}`,
		`{"invite_token":"ic://join/t","invite_payload":{"v":"x"},"peer_pubkey":"` + pk + `","display_name":" b "}`,
		`{}`, `null`, `[]`, `"x"`, ``, `{"invite_payload":[]}`, `{"peer_pubkey":5}`,
	} {
		f.Add([]byte(s))
	}
	known := map[string]bool{joinInvalidJSON: true, joinRequired: true, joinBadPubkey: true, joinLongName: true, joinBadSignature: true}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, msg := parseJoinBody(raw)
		if msg != "" {
			if !known[msg] {
				t.Fatalf("undocumented message %q", msg)
			}
			return
		}
		if r.Token == "" || r.DisplayName == "" || len(r.DisplayName) > protocol.MaxDisplayNameBytes ||
			!invite.IsPubkeyHex(r.PeerPubkey) || strings.ToLower(r.PeerPubkey) != r.PeerPubkey {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// FuzzParseClaimBody: a claim body is untrusted; what parses has a valid ed25519 key.
func FuzzParseClaimBody(f *testing.F) {
	f.Add([]byte(`{"recipient_x25519_pubkey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","peer_pubkey":"` + strings.Repeat("ab", 32) + `"}`))
	f.Add([]byte(`{"recipient_x25519_pubkey":5}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, ok := parseClaimBody(raw)
		if ok && (!invite.IsPubkeyHex(r.PeerPubkey) || len(r.DisplayName) > protocol.MaxDisplayNameBytes) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
