package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/invite"
)

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
