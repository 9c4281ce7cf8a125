package api_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/client"
)

func TestClaimDisabledByDefault(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("no v2")
	code := e.invite(m, nil).Body["code"].(string)
	peer, _ := client.NewKey()
	body, _, _ := claimBody(t, peer)
	r := e.call("POST", "/invites/"+code+"/claim", "", body)
	expect(t, r, http.StatusNotImplemented, "invite_v2_disabled")
	if r.Body["detail"] == nil || r.Body["ok"] != nil {
		t.Fatalf("answer %s", r.Raw)
	}
	if n := scalar[int](e, `SELECT used_count FROM invites WHERE code = $1`, code); n != 0 {
		t.Fatalf("used_count %d", n)
	}
}

func TestClaim(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_INVITE_V2_ENABLED": "1"})
	m := e.ownedMesh("claims")
	code := e.invite(m, nil).Body["code"].(string)
	peer, sec := client.NewKey()
	body, xpub, xpriv := claimBody(t, peer)
	path := "/invites/" + code + "/claim"

	// Malformed claims are refused before anything is written.
	noPeer := map[string]any{"recipient_x25519_pubkey": body["recipient_x25519_pubkey"]}
	for name, b := range map[string]any{
		"not json":        "{",
		"no peer_pubkey":  noPeer,
		"bad peer_pubkey": map[string]any{"recipient_x25519_pubkey": body["recipient_x25519_pubkey"], "peer_pubkey": "abc"},
		"short recipient": map[string]any{"recipient_x25519_pubkey": base64.RawURLEncoding.EncodeToString(make([]byte, 31)), "peer_pubkey": peer},
		"long recipient":  map[string]any{"recipient_x25519_pubkey": strings.Repeat("A", 44), "peer_pubkey": peer},
		"no recipient":    map[string]any{"peer_pubkey": peer},
		"long name":       map[string]any{"recipient_x25519_pubkey": body["recipient_x25519_pubkey"], "peer_pubkey": peer, "display_name": strings.Repeat("n", 200)},
	} {
		r := e.call("POST", path, "", b)
		if r.Status != http.StatusBadRequest || r.Body["error"] != "malformed" {
			t.Errorf("%s: %d %s, want 400 malformed", name, r.Status, r.Raw)
		}
	}
	if n := scalar[int](e, `SELECT used_count FROM invites WHERE code = $1`, code); n != 0 {
		t.Fatalf("malformed claims consumed %d uses", n)
	}
	expect(t, e.call("POST", "/invites/NOSUCHCD/claim", "", body), http.StatusNotFound, "not_found")

	r := e.call("POST", "/invites/"+strings.ToLower(code)+"/claim", "", body)
	expect(t, r, http.StatusOK, "")
	memberID, _ := r.Body["member_id"].(string)
	owner := scalar[string](e, `SELECT owner_pubkey FROM meshes WHERE id = $1`, m.ID)
	if r.Body["mesh_id"] != m.ID || r.Body["owner_pubkey"] != owner || len(memberID) != 32 ||
		!strings.HasPrefix(r.Body["canonical_v2"].(string), "v=2|"+m.ID+"|") {
		t.Fatalf("claim answer %s", r.Raw)
	}
	sealed, err := base64.RawURLEncoding.DecodeString(r.Body["sealed_root_key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	root, ok := box.OpenAnonymous(nil, sealed, xpub, xpriv)
	if !ok || base64.RawURLEncoding.EncodeToString(root) != scalar[string](e, `SELECT root_key FROM meshes WHERE id = $1`, m.ID) {
		t.Fatalf("sealed root key does not open to the mesh root key (%v)", ok)
	}
	var stored, claimedBy, name string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT m.peer_pubkey, i.claimed_by_pubkey, m.display_name FROM members m, invites i WHERE m.id = $1 AND i.code = $2`,
		memberID, code).Scan(&stored, &claimedBy, &name); err != nil {
		t.Fatal(err)
	}
	if stored != peer || claimedBy != peer || name != "member-"+peer[:8] {
		t.Fatalf("member key %s, claimed_by %s, name %q", stored, claimedBy, name)
	}
	if n := scalar[int](e, `SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'member_joined'`, m.ID); n != 1 {
		t.Fatalf("%d member_joined events", n)
	}

	// The claimant re-claims (it lost the answer): the same member, no use consumed, though
	// the invite is used up — with proof of its key; without it (anyone who knows the code
	// and the member's public key) it is told the invite is exhausted, as anyone else is.
	again, againPub, _ := claimBody(t, peer)
	expect(t, e.call("POST", path, "", again), http.StatusGone, "exhausted")
	again["peer_sig"] = hex.EncodeToString(ed25519.Sign(sec, api.ClaimProofMessage(code, *againPub)))
	other, _, _ := claimBody(t, peer)
	other["peer_sig"] = again["peer_sig"] // a proof for another recipient key does not transfer
	expect(t, e.call("POST", path, "", other), http.StatusGone, "exhausted")
	r = e.call("POST", path, "", again)
	expect(t, r, http.StatusOK, "")
	if r.Body["member_id"] != memberID || r.Body["already_member"] != true {
		t.Fatalf("re-claim %s", r.Raw)
	}
	if n := scalar[int](e, `SELECT used_count FROM invites WHERE code = $1`, code); n != 1 {
		t.Fatalf("used_count %d", n)
	}
	stranger, _ := client.NewKey()
	sb, _, _ := claimBody(t, stranger)
	expect(t, e.call("POST", path, "", sb), http.StatusGone, "exhausted")

	// The claimed member connects with its ed25519 key.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, e.inst.WS, client.Identity{MeshID: m.ID, MemberID: memberID, Pubkey: peer, Secret: sec}, client.Options{})
	if err != nil {
		t.Fatalf("claimed member cannot connect: %v", err)
	}
	_ = cl.Close()
}

func TestClaimLifecycle(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_INVITE_V2_ENABLED": "1"})
	m := e.ownedMesh("lifecycle")
	gone := e.ownedMesh("archived")
	goneCode := e.invite(gone, nil).Body["code"].(string)
	e.exec(`UPDATE meshes SET archived_at = now() WHERE id = $1`, gone.ID)
	cases := []struct {
		name, sql string
		status    int
		want      string
	}{
		{"revoked", `UPDATE invites SET revoked_at = now() WHERE code = $1`, http.StatusGone, "revoked"},
		{"expired", `UPDATE invites SET expires_at = now() - interval '1 second' WHERE code = $1`, http.StatusGone, "expired"},
		{"exhausted", `UPDATE invites SET used_count = max_uses WHERE code = $1`, http.StatusGone, "exhausted"},
		{"tampered capability", `UPDATE invites SET role = 'admin' WHERE code = $1`, http.StatusBadRequest, "bad_signature"},
		{"broken capability", `UPDATE invites SET capability_v2 = 'not json' WHERE code = $1`, http.StatusBadRequest, "malformed"},
		{"archived mesh", `SELECT $1::text`, http.StatusNotFound, "not_found"},
	}
	for _, c := range cases {
		code := goneCode
		if c.name != "archived mesh" {
			code = e.invite(m, nil).Body["code"].(string)
		}
		e.exec(c.sql, code)
		peer, _ := client.NewKey()
		body, _, _ := claimBody(t, peer)
		r := e.call("POST", "/invites/"+code+"/claim", "", body)
		if r.Status != c.status || r.Body["error"] != c.want {
			t.Errorf("%s: %d %s, want %d %q", c.name, r.Status, r.Raw, c.status, c.want)
		}
	}
	if n := scalar[int](e, `SELECT count(*) FROM members`); n != 0 {
		t.Fatalf("%d members after refused claims", n)
	}
	if n := scalar[int](e, `SELECT count(*) FROM invites WHERE used_count > 0 AND used_count < max_uses`); n != 0 {
		t.Fatalf("refused claims consumed uses of %d invites", n)
	}
}
