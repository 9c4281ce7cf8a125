package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

// ownedMesh is a mesh owned by a user with a bearer.
type ownedMesh struct {
	ID, Slug, OwnerID, OwnerToken string
}

func (e *env) ownedMesh(name string) ownedMesh {
	e.t.Helper()
	m, err := admin.CreateMesh(context.Background(), e.q, name)
	if err != nil {
		e.t.Fatal(err)
	}
	uid, tok := e.user(strings.ReplaceAll(name, " ", "") + "@example.com")
	e.exec(`UPDATE meshes SET owner_user_id = $1 WHERE id = $2`, uid, m.MeshID)
	return ownedMesh{ID: m.MeshID, Slug: m.Slug, OwnerID: uid, OwnerToken: tok}
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.d.Pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// scalar runs a query returning one value.
func scalar[T any](e *env, sql string, args ...any) T {
	e.t.Helper()
	var v T
	if err := e.d.Pool.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// invite creates an invite through the API and returns the answer.
func (e *env) invite(m ownedMesh, body any) reply {
	e.t.Helper()
	r := e.call("POST", "/cli/mesh/"+m.Slug+"/invite", m.OwnerToken, body)
	expect(e.t, r, http.StatusOK, "")
	return r
}

// joinBody is a /join body for token: its decoded payload, a fresh key and a name.
func joinBody(t *testing.T, token, pubkey, name string) map[string]any {
	t.Helper()
	p, err := invite.DecodeToken(token)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"invite_token": token, "invite_payload": p, "peer_pubkey": pubkey, "display_name": name}
}

func TestCreateInviteRoute(t *testing.T) {
	e := newEnv(t, map[string]string{"APP_URL": "https://app.example", "BROKER_URL": "wss://broker.example/ws"})
	m := e.ownedMesh("Team A")
	_, other := e.user("other@example.com")

	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", "", map[string]any{}), http.StatusUnauthorized, "missing_bearer_token")
	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", "nope", map[string]any{}), http.StatusUnauthorized, "invalid_or_revoked_token")
	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", other, map[string]any{}), http.StatusForbidden, "Only the owner can invite (for now)")
	expect(t, e.call("POST", "/cli/mesh/no-such-mesh/invite", m.OwnerToken, map[string]any{}), http.StatusNotFound, "Mesh not found")
	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", m.OwnerToken, "{not json"), http.StatusBadRequest, "Invalid body")
	// A mesh without an owner account (made by `broker admin`) has no owner to invite.
	bare, _ := admin.CreateMesh(context.Background(), e.q, "bare")
	expect(t, e.call("POST", "/cli/mesh/"+bare.Slug+"/invite", other, nil), http.StatusForbidden, "Only the owner can invite (for now)")
	if n := scalar[int](e, `SELECT count(*) FROM invites`); n != 0 {
		t.Fatalf("%d invites after refused requests", n)
	}

	r := e.invite(m, map[string]any{"role": "admin", "email": "x@example.com", "expires_in": "1d"})
	code, _ := r.Body["code"].(string)
	token, _ := r.Body["token"].(string)
	if len(code) != 8 || r.Body["url"] != "https://app.example/i/"+code || r.Body["emailed"] != false ||
		r.Body["join_url"] != "ic://join/"+token {
		t.Fatalf("answer %s", r.Raw)
	}
	exp, err := time.Parse(time.RFC3339, r.Body["expires_at"].(string))
	if err != nil || exp.Sub(time.Now()) < 7*24*time.Hour-time.Minute || exp.Sub(time.Now()) > 7*24*time.Hour {
		t.Fatalf("expires_at %v (%v)", r.Body["expires_at"], err)
	}
	p, err := invite.DecodeToken(token)
	if err != nil || p.Verify() != nil {
		t.Fatalf("token: %v", err)
	}
	owner := scalar[string](e, `SELECT owner_pubkey FROM meshes WHERE id = $1`, m.ID)
	if p.MeshID != m.ID || p.MeshSlug != m.Slug || p.BrokerURL != "wss://broker.example/ws" || p.Role != "admin" ||
		p.OwnerPubkey != owner || p.ExpiresAt != exp.Unix() || p.Nonce == "" {
		t.Fatalf("payload %+v", p)
	}
	var version, maxUses int
	var createdBy, capability, tokenBytes string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT version, max_uses, created_by, capability_v2, token_bytes FROM invites WHERE code = $1`, code).
		Scan(&version, &maxUses, &createdBy, &capability, &tokenBytes); err != nil {
		t.Fatal(err)
	}
	if version != 2 || maxUses != 1 || createdBy != m.OwnerID || tokenBytes != p.Canonical() {
		t.Fatalf("row: version %d max_uses %d created_by %s token_bytes %q", version, maxUses, createdBy, tokenBytes)
	}
	c, err := invite.ParseCapability(capability)
	if err != nil || !strings.HasPrefix(c.Canonical, "v=2|"+m.ID+"|") {
		t.Fatalf("capability %q: %v", capability, err)
	}
	// The audit event is metadata: no token, no root key.
	payload := scalar[string](e, `SELECT payload::text FROM audit_log WHERE mesh_id = $1 AND event_type = 'invite_created'`, m.ID)
	if !strings.Contains(payload, `"role": "admin"`) || strings.Contains(payload, token[:20]) || strings.Contains(payload, p.MeshRootKey) {
		t.Fatalf("invite_created payload %s", payload)
	}
	// Any role other than admin is member.
	r = e.invite(m, map[string]any{"role": "owner"})
	if p, _ := invite.DecodeToken(r.Body["token"].(string)); p.Role != "member" {
		t.Fatalf("role %q", p.Role)
	}
}

// A mesh that lost its keys gets new ones when it next invites (the original's self-heal).
func TestCreateInviteHealsMeshKeys(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("healing")
	e.exec(`UPDATE meshes SET owner_secret_key = NULL, root_key = NULL WHERE id = $1`, m.ID)
	old := scalar[string](e, `SELECT owner_pubkey FROM meshes WHERE id = $1`, m.ID)
	r := e.invite(m, nil)
	p, err := invite.DecodeToken(r.Body["token"].(string))
	if err != nil || p.Verify() != nil {
		t.Fatal(err)
	}
	var pub, root string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT owner_pubkey, root_key FROM meshes WHERE id = $1`, m.ID).Scan(&pub, &root); err != nil {
		t.Fatal(err)
	}
	if pub == old || pub != p.OwnerPubkey || root != p.MeshRootKey {
		t.Fatalf("keys not healed: pub %s (old %s, token %s), root %s (token %s)", pub, old, p.OwnerPubkey, root, p.MeshRootKey)
	}
	// The healed invite is joinable.
	pk, _ := client.NewKey()
	expect(t, e.call("POST", "/join", "", joinBody(t, r.Body["token"].(string), pk, "a")), http.StatusOK, "")
}

// Invites created for the same mesh and role in the same second are distinct tokens (the
// original's were identical, and the second insert failed).
func TestSameSecondInvitesAreDistinct(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("twins")
	mesh, err := e.q.InviteMeshByID(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		var made []invitestore.Created
		for range 2 {
			c, err := invitestore.Create(context.Background(), e.d.Pool, invitestore.Params{Mesh: mesh, Role: "member",
				BrokerURL: "wss://b/ws", AppURL: "https://a"})
			if err != nil {
				t.Fatal(err)
			}
			made = append(made, c)
		}
		if made[0].Token == made[1].Token || made[0].Code == made[1].Code {
			t.Fatalf("two invites share a token or code: %+v", made)
		}
		if made[0].ExpiresAt.Equal(made[1].ExpiresAt) {
			return // same second, distinct tokens
		}
	}
	t.Fatal("no two invites were made in the same second in 10 tries")
}

func TestJoin(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("join ok")
	token := e.invite(m, map[string]any{}).Body["token"].(string)
	pub, sec := client.NewKey()
	r := e.call("POST", "/join", "", joinBody(t, token, strings.ToUpper(pub), "  alice  "))
	expect(t, r, http.StatusOK, "")
	memberID, _ := r.Body["memberId"].(string)
	if r.Body["ok"] != true || len(memberID) != 32 || r.Body["alreadyMember"] != nil {
		t.Fatalf("join answer %s", r.Raw)
	}
	var key, name, role, mode string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT peer_pubkey, display_name, role, message_mode FROM members WHERE id = $1`, memberID).
		Scan(&key, &name, &role, &mode); err != nil {
		t.Fatal(err)
	}
	if key != pub || name != "alice" || role != "member" || mode != "push" {
		t.Fatalf("member %s %q %s %s", key, name, role, mode)
	}
	// Joining again with the same key: the same member, no use consumed, even though the
	// invite has no use left.
	r = e.call("POST", "/join", "", joinBody(t, token, pub, "alice again"))
	expect(t, r, http.StatusOK, "")
	if r.Body["memberId"] != memberID || r.Body["alreadyMember"] != true {
		t.Fatalf("re-join %s", r.Raw)
	}
	if n := scalar[int](e, `SELECT used_count FROM invites WHERE token = $1`, token); n != 1 {
		t.Fatalf("used_count %d after a join and a re-join", n)
	}
	other, _ := client.NewKey()
	expect(t, e.call("POST", "/join", "", joinBody(t, token, other, "bob")), http.StatusBadRequest, "invite_exhausted")
	ev := scalar[string](e, `SELECT payload::text FROM audit_log WHERE mesh_id = $1 AND event_type = 'member_joined'`, m.ID)
	if !strings.Contains(ev, memberID) || !strings.Contains(ev, `"via": "invite"`) {
		t.Fatalf("member_joined payload %s", ev)
	}
	// The new member connects.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, e.inst.WS, client.Identity{MeshID: m.ID, MemberID: memberID, Pubkey: pub, Secret: sec}, client.Options{})
	if err != nil {
		t.Fatalf("joined member cannot connect: %v", err)
	}
	_ = cl.Close()
}

// The invite's preset shapes the member (reference §3.4 step 6).
func TestJoinAppliesPreset(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("preset")
	token := e.invite(m, map[string]any{"role": "admin"}).Body["token"].(string)
	e.exec(`UPDATE invites SET preset = '{"displayName":"Build Bot","roleTag":"ci","groups":[{"name":"ops","role":"lead"}],"messageMode":"inbox"}' WHERE token = $1`, token)
	pub, _ := client.NewKey()
	r := e.call("POST", "/join", "", joinBody(t, token, pub, "ignored"))
	expect(t, r, http.StatusOK, "")
	var name, role, tag, groups, mode string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT display_name, role, role_tag, default_groups::text, message_mode FROM members WHERE id = $1`,
		r.Body["memberId"]).Scan(&name, &role, &tag, &groups, &mode); err != nil {
		t.Fatal(err)
	}
	if name != "Build Bot" || role != "admin" || tag != "ci" || !strings.Contains(groups, `"ops"`) || mode != "inbox" {
		t.Fatalf("member %q %s %s %s %s", name, role, tag, groups, mode)
	}
}

func TestJoinErrors(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("errors")
	m2 := e.ownedMesh("elsewhere")
	fresh := func(om ownedMesh) string { return e.invite(om, nil).Body["token"].(string) }
	pub, _ := client.NewKey()
	ownerSecret := func(meshID string) ed25519.PrivateKey {
		k, err := invite.ParseSecretKey(scalar[string](e, `SELECT owner_secret_key FROM meshes WHERE id = $1`, meshID))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// with re-signs a token's payload after f changes it (with the mesh's key unless f
	// re-signs it itself).
	with := func(token string, f func(p *invite.Payload)) map[string]any {
		b := joinBody(t, token, pub, "x")
		p := b["invite_payload"].(invite.Payload)
		f(&p)
		b["invite_payload"] = p
		return b
	}
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)

	revoked, expired, exhausted := fresh(m), fresh(m), fresh(m)
	e.exec(`UPDATE invites SET revoked_at = now() WHERE token = $1`, revoked)
	e.exec(`UPDATE invites SET expires_at = now() - interval '1 second' WHERE token = $1`, expired)
	e.exec(`UPDATE invites SET used_count = 1 WHERE token = $1`, exhausted)
	archivedMesh := e.ownedMesh("archived")
	archivedTok := fresh(archivedMesh)
	e.exec(`UPDATE meshes SET archived_at = now() WHERE id = $1`, archivedMesh.ID)
	keyless := e.ownedMesh("keyless")
	keylessTok := fresh(keyless)
	e.exec(`UPDATE meshes SET owner_pubkey = NULL WHERE id = $1`, keyless.ID)
	tok := fresh(m)
	noToken := joinBody(t, tok, pub, "x")
	delete(noToken, "invite_token")

	cases := []struct {
		name string
		body any
		want string
	}{
		{"not json", "{", "invalid JSON"},
		{"json array", "[]", "invalid JSON"},
		{"json null", "null", "invalid JSON"},
		{"empty body", "", "invalid JSON"},
		{"empty object", map[string]any{}, "invite_token, invite_payload, peer_pubkey, display_name required"},
		{"no token", noToken, "invite_token, invite_payload, peer_pubkey, display_name required"},
		{"blank name", joinBody(t, tok, pub, "   "), "invite_token, invite_payload, peer_pubkey, display_name required"},
		{"numeric key", map[string]any{"invite_token": tok, "invite_payload": map[string]any{}, "peer_pubkey": 5, "display_name": "x"},
			"invite_token, invite_payload, peer_pubkey, display_name required"},
		{"payload not object", map[string]any{"invite_token": tok, "invite_payload": "x", "peer_pubkey": pub, "display_name": "x"},
			"invite_token, invite_payload, peer_pubkey, display_name required"},
		{"short key", joinBody(t, tok, pub[:62], "x"), "peer_pubkey must be 64 hex chars (32 bytes)"},
		{"non-hex key", joinBody(t, tok, "zz"+pub[2:], "x"), "peer_pubkey must be 64 hex chars (32 bytes)"},
		{"long name", joinBody(t, tok, pub, strings.Repeat("n", 129)), "display_name must be at most 128 bytes"},
		{"payload types", map[string]any{"invite_token": tok, "invite_payload": map[string]any{"v": "one"}, "peer_pubkey": pub, "display_name": "x"},
			"invite_bad_signature"},
		{"tampered role", with(tok, func(p *invite.Payload) { p.Role = "admin" }), "invite_bad_signature"},
		{"tampered expiry", with(tok, func(p *invite.Payload) { p.ExpiresAt += 3600 }), "invite_bad_signature"},
		{"garbage signature", with(tok, func(p *invite.Payload) { p.Signature = "xyz" }), "invite_bad_signature"},
		{"unknown mesh", with(tok, func(p *invite.Payload) { p.MeshID = "nope"; p.Sign(ownerSecret(m.ID)) }), "mesh_not_found"},
		{"archived mesh", joinBody(t, archivedTok, pub, "x"), "mesh_not_found"},
		{"mesh without key", joinBody(t, keylessTok, pub, "x"), "mesh_missing_owner_key"},
		{"signed by a stranger", with(tok, func(p *invite.Payload) { p.Sign(strangerKey) }), "invite_owner_mismatch"},
		{"unknown token", map[string]any{"invite_token": "bm90IGEgdG9rZW4", "invite_payload": joinBody(t, tok, pub, "x")["invite_payload"],
			"peer_pubkey": pub, "display_name": "x"}, "invite_not_found"},
		{"token of another mesh", map[string]any{"invite_token": fresh(m2), "invite_payload": joinBody(t, tok, pub, "x")["invite_payload"],
			"peer_pubkey": pub, "display_name": "x"}, "invite_mesh_mismatch"},
		{"revoked", joinBody(t, revoked, pub, "x"), "invite_revoked"},
		{"expired", joinBody(t, expired, pub, "x"), "invite_expired"},
		{"exhausted", joinBody(t, exhausted, pub, "x"), "invite_exhausted"},
	}
	for _, c := range cases {
		r := e.call("POST", "/join", "", c.body)
		if r.Status != http.StatusBadRequest || r.Body["error"] != c.want || r.Body["ok"] != false {
			t.Errorf("%s: %d %s, want 400 {ok:false, error:%q}", c.name, r.Status, r.Raw, c.want)
		}
	}
	if n := scalar[int](e, `SELECT count(*) FROM members`); n != 0 {
		t.Fatalf("%d members after refused joins", n)
	}
	if n := scalar[int](e, `SELECT coalesce(sum(used_count), 0) FROM invites WHERE token <> $1`, exhausted); n != 0 {
		t.Fatalf("refused joins consumed %d uses", n)
	}
	// The valid request still works: nothing above spoiled it.
	expect(t, e.call("POST", "/join", "", joinBody(t, tok, pub, "x")), http.StatusOK, "")
}

// Five joiners with distinct keys race for a one-use invite: exactly one becomes a member.
func TestJoinSingleUseUnderConcurrency(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("race")
	token := e.invite(m, nil).Body["token"].(string)
	var wg sync.WaitGroup
	results := make([]reply, 5)
	for i := range results {
		pub, _ := client.NewKey()
		body := joinBody(t, token, pub, "racer")
		wg.Go(func() { results[i] = e.call("POST", "/join", "", body) })
	}
	wg.Wait()
	ok := 0
	for _, r := range results {
		switch {
		case r.Status == http.StatusOK:
			ok++
		case r.Status != http.StatusBadRequest || r.Body["error"] != "invite_exhausted":
			t.Errorf("loser answered %d %s", r.Status, r.Raw)
		}
	}
	members := scalar[int](e, `SELECT count(*) FROM members WHERE mesh_id = $1`, m.ID)
	used := scalar[int](e, `SELECT used_count FROM invites WHERE token = $1`, token)
	if ok != 1 || members != 1 || used != 1 {
		t.Fatalf("%d successes, %d members, used_count %d; want 1, 1, 1", ok, members, used)
	}
}

// The same key joining concurrently on a multi-use invite: one member, one use, and every
// request answered 200 (the member index's refusal is "already a member", not a 500).
func TestConcurrentJoinsOfOneKey(t *testing.T) {
	e := newEnv(t, nil)
	m := e.ownedMesh("dupes")
	token := e.invite(m, nil).Body["token"].(string)
	e.exec(`UPDATE invites SET max_uses = 5 WHERE token = $1`, token)
	pub, _ := client.NewKey()
	body := joinBody(t, token, pub, "twin")
	var wg sync.WaitGroup
	results := make([]reply, 5)
	for i := range results {
		wg.Go(func() { results[i] = e.call("POST", "/join", "", body) })
	}
	wg.Wait()
	ids := map[any]bool{}
	for _, r := range results {
		expect(t, r, http.StatusOK, "")
		ids[r.Body["memberId"]] = true
	}
	members := scalar[int](e, `SELECT count(*) FROM members WHERE mesh_id = $1`, m.ID)
	used := scalar[int](e, `SELECT used_count FROM invites WHERE token = $1`, token)
	if len(ids) != 1 || members != 1 || used != 1 {
		t.Fatalf("%d member ids answered, %d members, used_count %d; want 1, 1, 1", len(ids), members, used)
	}
}

// claimBody is a v2 claim body with a fresh x25519 key (returned with its secret).
func claimBody(t *testing.T, peer string) (map[string]any, *[32]byte, *[32]byte) {
	t.Helper()
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"recipient_x25519_pubkey": base64.RawURLEncoding.EncodeToString(pub[:]), "peer_pubkey": peer}, pub, priv
}

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
	// the invite is used up; anyone else is told it is exhausted.
	again, _, _ := claimBody(t, peer)
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

// The body is decoded before authentication (the legacy path reads user_id from it), and
// with BROKER_LEGACY_AUTH=1 a body user_id authenticates, with the deprecation headers.
func TestCreateInviteBodyBeforeAuthAndLegacy(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_LEGACY_AUTH": "1"})
	m := e.ownedMesh("legacy")
	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", "", "{oops"), http.StatusBadRequest, "Invalid body")
	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", "", map[string]any{"role": 5}), http.StatusBadRequest, "Invalid body")
	r := e.call("POST", "/cli/mesh/"+m.Slug+"/invite", "", map[string]any{"user_id": m.OwnerID})
	expect(t, r, http.StatusOK, "")
	if r.Header.Get("Deprecation") == "" || r.Header.Get("Warning") == "" {
		t.Fatalf("legacy answer lacks the deprecation headers: %v", r.Header)
	}
	other, _ := e.user("legacy-other@example.com")
	expect(t, e.call("POST", "/cli/mesh/"+m.Slug+"/invite", "", map[string]any{"user_id": other}), http.StatusForbidden, "Only the owner can invite (for now)")
}

// Joins and claims are unauthenticated writes: counted per client IP.
func TestJoinAndClaimAreIPLimited(t *testing.T) {
	e := newEnv(t, map[string]string{"API_IP_RATE_LIMIT_PER_MIN": "2", "BROKER_INVITE_V2_ENABLED": "1"})
	var last reply
	for range 3 {
		last = e.call("POST", "/join", "", map[string]any{})
	}
	expect(t, last, http.StatusTooManyRequests, "rate limited")
	if last.Body["ok"] != false || last.Header.Get("Retry-After") != "60" {
		t.Fatalf("429 answer %s %v", last.Raw, last.Header)
	}
	// The claim shares the same per-IP budget, now spent.
	expect(t, e.call("POST", "/invites/ABCDEFGH/claim", "", map[string]any{}), http.StatusTooManyRequests, "rate limited")
}

// A body over MAX_MESSAGE_BYTES is refused 413 in the route's shape.
func TestJoinBodyTooLarge(t *testing.T) {
	e := newEnv(t, map[string]string{"MAX_MESSAGE_BYTES": "1024"})
	r := e.call("POST", "/join", "", `{"invite_token":"`+strings.Repeat("a", 2000)+`"}`)
	expect(t, r, http.StatusRequestEntityTooLarge, "payload too large")
	if r.Body["ok"] != false {
		t.Fatalf("413 answer %s", r.Raw)
	}
}
