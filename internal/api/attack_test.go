package api_test

// Attacks on the account surface by the two parties of docs/security.md: a stranger who
// reaches the port (with or without a bearer of its own), and another member of the same
// mesh. Each test fails against a broker that lets the attack through.

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/invite"
)

// A member's standing ends with its revocation: a revoked admin's bearer could still set
// anyone's permissions, because the check read revoked members too.
func TestAttackRevokedAdminCannotManagePermissions(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("revoked-admin")
	alice, aliceToken := e.member(o.meshID, "alice", "admin")
	bob, _ := e.member(o.meshID, "bob", "member")
	expect(t, e.call("DELETE", "/mesh/"+o.meshID+"/member/"+alice.MemberID, o.ownerToken, nil), 200, "")

	path := "/cli/mesh/" + o.slug + "/permissions"
	grant := map[string]any{"member_id": bob.MemberID, "permissions": map[string]bool{"canManagePermissions": true}}
	expect(t, e.call("POST", path, aliceToken, grant), 403, "Not a member of this mesh")
	if n := e.count(`SELECT count(*) FROM permissions WHERE member_id = $1`, bob.MemberID); n != 0 {
		t.Fatal("a revoked admin's bearer wrote a permissions row")
	}
	expect(t, e.call("GET", path, aliceToken, nil), 403, "Not a member of this mesh")
}

// Ids from another mesh in the path reach nothing: an admin of mesh B cannot edit, revoke or
// kick in mesh A by naming A's member or session under B.
func TestAttackCrossMeshIDsInPath(t *testing.T) {
	e := newEnv(t, nil)
	a := e.createMesh("mesh-a")
	b := e.createMesh("mesh-b")
	victim, _ := e.member(a.meshID, "victim", "member")
	sock := dial(t, e.inst.WS, victim)
	presence := sock.Ack.Str("presenceId")

	expect(t, e.call("PATCH", "/mesh/"+b.meshID+"/member/"+victim.MemberID, b.ownerToken, map[string]any{"displayName": "pwned"}), 404, "member not found")
	expect(t, e.call("DELETE", "/mesh/"+b.meshID+"/member/"+victim.MemberID, b.ownerToken, nil), 404, "member not found")
	expect(t, e.call("DELETE", "/mesh/"+b.meshID+"/session/"+presence, b.ownerToken, nil), 404, "session not found")
	// And B's owner is a stranger to A.
	expect(t, e.call("DELETE", "/mesh/"+a.meshID+"/session/"+presence, b.ownerToken, nil), 403, "caller not a member of this mesh")
	expect(t, e.call("POST", "/cli/mesh/"+b.slug+"/permissions", b.ownerToken,
		map[string]any{"member_id": victim.MemberID, "permissions": map[string]bool{"canSend": false}}), 404, "Member not found")
	stillOpenFor(t, sock, 200*time.Millisecond)
	if n := e.count(`SELECT count(*) FROM members WHERE id = $1 AND revoked_at IS NULL AND display_name = 'victim'`, victim.MemberID); n != 1 {
		t.Fatal("the victim's member changed")
	}
}

// A plain member cannot raise itself: not through PATCH permission, the settings, or the
// permissions route, and a policy that forbids self-edits holds.
func TestAttackPlainMemberCannotEscalate(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("escalate")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	self := "/mesh/" + o.meshID + "/member/" + bob.MemberID
	expect(t, e.call("PATCH", self, bobToken, map[string]any{"permission": "admin", "roleTag": "x"}), 400, "admin-managed fields: permission")
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/settings", bobToken, map[string]any{"selfEditable": map[string]bool{"roleTag": true}}), 403, "admin access required")
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/member/"+o.owner.MemberID, bobToken, map[string]any{"permission": "member"}), 403, "")
	expect(t, e.call("POST", "/cli/mesh/"+o.slug+"/permissions", bobToken,
		map[string]any{"member_id": bob.MemberID, "permissions": map[string]bool{"canManagePermissions": true}}), 403, "")
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/settings", o.ownerToken, map[string]any{"selfEditable": map[string]bool{"displayName": false}}), 200, "")
	expect(t, e.call("PATCH", self, bobToken, map[string]any{"displayName": "Owner"}), 400, "admin-managed fields: displayName")
	if n := e.count(`SELECT count(*) FROM members WHERE id = $1 AND role = 'member' AND display_name = 'bob'`, bob.MemberID); n != 1 {
		t.Fatal("bob's member changed")
	}
}

// A change of who may do what leaves a trace in the mesh's audit chain: a role change
// through PATCH permission, a permissions row, and the selfEditable policy.
func TestAttackPrivilegeChangesAreAudited(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("audited")
	bob, _ := e.member(o.meshID, "bob", "member")
	events := func(typ string) int {
		return e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = $2`, o.meshID, typ)
	}
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/member/"+bob.MemberID, o.ownerToken, map[string]any{"permission": "admin"}), 200, "")
	if events("member_updated") != 1 {
		t.Fatal("a role change left no member_updated event")
	}
	expect(t, e.call("POST", "/cli/mesh/"+o.slug+"/permissions", o.ownerToken,
		map[string]any{"member_id": bob.MemberID, "permissions": map[string]bool{"canManagePermissions": true}}), 200, "")
	if events("permissions_changed") != 1 {
		t.Fatal("a permissions change left no permissions_changed event")
	}
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/settings", o.ownerToken, map[string]any{"selfEditable": map[string]bool{"groups": false}}), 200, "")
	if events("settings_changed") != 1 {
		t.Fatal("a policy change left no settings_changed event")
	}
}

// A valid profile edit whose push does not fit a notification is not a 500: 32 groups with
// names of characters JSON escapes (6 bytes each) make an event over Postgres' 8000 bytes.
func TestAttackLargeProfilePushIsNot500(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("bigpush")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	sock := dial(t, e.inst.WS, bob)
	groups := make([]map[string]string, 32)
	for i := range groups {
		groups[i] = map[string]string{"name": strings.Repeat("<", 62) + string(rune('A'+i%26)) + string(rune('a'+i/26)), "role": strings.Repeat(">", 32)}
	}
	r := e.call("PATCH", "/mesh/"+o.meshID+"/member/"+bob.MemberID, bobToken, map[string]any{"groups": groups, "displayName": strings.Repeat("&", 128)})
	expect(t, r, 200, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		f, err := sock.Next(ctx, "push")
		if err != nil {
			t.Fatalf("no profile_updated on the member's socket: %v", err)
		}
		if f.Str("event") == "profile_updated" {
			break
		}
	}
}

// What one user can make the broker store is bounded: bearers it mints for itself.
func TestAttackTokensPerUserAreBounded(t *testing.T) {
	e := newEnv(t, nil)
	uid, tok := e.user("hoarder@example.com")
	body := map[string]any{"user_id": uid, "email": "hoarder@example.com"}
	refused := false
	for i := 0; i < 120; i++ {
		r := e.call("POST", "/cli/token", tok, body)
		if r.Status == http.StatusConflict {
			refused = true
			break
		}
		expect(t, r, 200, "")
	}
	if !refused {
		t.Fatalf("a user minted %d live tokens for itself", e.count(`SELECT count(*) FROM cli_sessions WHERE user_id = $1`, uid))
	}
	if n := e.count(`SELECT count(*) FROM cli_sessions WHERE user_id = $1 AND revoked_at IS NULL`, uid); n > 100 {
		t.Fatalf("%d live tokens", n)
	}
	// Revoking makes room again.
	r := e.call("GET", "/cli/sessions", tok, nil)
	expect(t, r, 200, "")
	last := r.Body["sessions"].([]any)[len(r.Body["sessions"].([]any))-1].(map[string]any)["id"]
	expect(t, e.call("POST", "/cli/session/revoke", tok, map[string]any{"session_id": last}), 200, "")
	expect(t, e.call("POST", "/cli/token", tok, body), 200, "")
}

// Creating and deleting meshes in a loop does not grow the meshes table without bound: the
// owned-mesh cap counts meshes archived in the last day.
func TestAttackMeshCreateDeleteChurnIsBounded(t *testing.T) {
	e := newEnv(t, nil)
	uid, tok := e.user("churn@example.com")
	for i := 0; i < 99; i++ {
		e.exec(`INSERT INTO meshes (id, name, slug, owner_user_id, archived_at) VALUES ($1, 'old', $2, $3, now())`, ids.New(), "old-"+ids.New(), uid)
	}
	pub, _ := client.NewKey()
	r := e.call("POST", "/cli/mesh/create", tok, map[string]any{"name": "last", "pubkey": pub})
	expect(t, r, 200, "")
	expect(t, e.call("DELETE", "/cli/mesh/"+r.Body["slug"].(string), tok, nil), 200, "")
	r = e.call("POST", "/cli/mesh/create", tok, map[string]any{"name": "one more", "pubkey": pub})
	expect(t, r, 409, "")
	// A day later the archived ones no longer count.
	e.exec(`UPDATE meshes SET archived_at = now() - interval '25 hours' WHERE owner_user_id = $1`, uid)
	expect(t, e.call("POST", "/cli/mesh/create", tok, map[string]any{"name": "one more", "pubkey": pub}), 200, "")
}

// Bad input is a 400 or 404, never a 500: NUL characters (which Postgres text cannot hold)
// in path parameters and in every stored string field, and odd JSON types.
func TestAttackNULAndOddInputIsNot500(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_INVITE_V2_ENABLED": "1"})
	o := e.createMesh("nul")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	pub, _ := client.NewKey()
	nul := "a\x00b"
	m := "/mesh/" + o.meshID
	cases := []struct {
		method, path, token string
		body                any
	}{
		{"GET", "/mesh/a%00b/members", bobToken, nil},
		{"PATCH", m + "/member/a%00b", bobToken, map[string]any{"roleTag": "x"}},
		{"DELETE", m + "/member/a%00b", o.ownerToken, nil},
		{"DELETE", m + "/session/a%00b", o.ownerToken, nil},
		{"PATCH", m + "/member/" + bob.MemberID, bobToken, map[string]any{"displayName": nul}},
		{"PATCH", m + "/member/" + bob.MemberID, bobToken, map[string]any{"roleTag": nul}},
		{"PATCH", m + "/member/" + bob.MemberID, bobToken, map[string]any{"groups": []map[string]string{{"name": nul, "role": nul}}}},
		{"PATCH", m + "/member/" + bob.MemberID, bobToken, map[string]any{"displayName": 5}},
		{"PATCH", m + "/settings", o.ownerToken, map[string]any{"selfEditable": map[string]any{"roleTag": "yes"}}},
		{"GET", "/cli/mesh/a%00b/permissions", bobToken, nil},
		{"POST", "/cli/mesh/" + o.slug + "/permissions", o.ownerToken, map[string]any{"member_id": nul, "permissions": map[string]bool{"canSend": true}}},
		{"POST", "/cli/mesh/" + o.slug + "/grants", bobToken, map[string]any{"grants": map[string]any{pub: []string{nul}}}},
		{"POST", "/cli/mesh/a%00b/grants", bobToken, map[string]any{"grants": map[string]any{pub: []string{"dm"}}}},
		{"DELETE", "/cli/mesh/a%00b", o.ownerToken, nil},
		{"POST", "/cli/mesh/a%00b/invite", o.ownerToken, map[string]any{}},
		{"POST", "/cli/mesh/create", bobToken, map[string]any{"name": nul, "pubkey": pub}},
		{"POST", "/cli/mesh/create", bobToken, map[string]any{"name": "n", "pubkey": pub, "description": nul, "template": nul}},
		{"POST", "/cli/mesh/create", bobToken, map[string]any{"name": "n", "pubkey": pub, "slug": 1e300}},
		{"POST", "/invites/a%00b/claim", "", map[string]any{"recipient_x25519_pubkey": strings.Repeat("A", 43), "peer_pubkey": pub}},
		{"POST", "/join", "", map[string]any{"invite_token": nul, "invite_payload": map[string]any{"v": 1e300}, "peer_pubkey": pub, "display_name": "x"}},
		{"GET", "/cli/device-code/a%00b", "", nil},
		{"POST", "/cli/session/revoke", bobToken, map[string]any{"session_id": nul}},
		{"POST", "/cli/session/revoke", "", map[string]any{"token": nul}},
	}
	for _, c := range cases {
		r := e.call(c.method, c.path, c.token, c.body)
		if r.Status >= 500 {
			t.Errorf("%s %s %v: %d %s", c.method, c.path, c.body, r.Status, r.Raw)
		}
	}
	// A v1 join and a v2 claim with a NUL in the display name.
	inv := e.invite(e.ownedMesh("nul join"), map[string]any{})
	r := e.call("POST", "/join", "", joinBody(t, inv.Body["token"].(string), pub, nul))
	if r.Status >= 500 {
		t.Errorf("join with a NUL name: %d %s", r.Status, r.Raw)
	}
	body, _, _ := claimBody(t, pub)
	body["display_name"] = nul
	r = e.call("POST", "/invites/"+inv.Body["code"].(string)+"/claim", "", body)
	if r.Status >= 500 {
		t.Errorf("claim with a NUL name: %d %s", r.Status, r.Raw)
	}
}

// A member's bearer alone cannot append audit events (kept for ever) as fast as it can
// send requests: a user's writes are rate limited across instances.
func TestAttackUserWritesAreRateLimited(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("flood")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	second := e.second()
	path := "/mesh/" + o.meshID + "/member/" + bob.MemberID
	limited := false
	for i := 0; i < 400 && !limited; i++ {
		base := e.inst.HTTP
		if i%2 == 1 {
			base = second.HTTP // the budget is the user's, not each instance's
		}
		r := callAt(t, base, "PATCH", path, bobToken, map[string]any{"roleTag": "t" + string(rune('a'+i%26))})
		if r.Status == http.StatusTooManyRequests {
			limited = true
			if r.Header.Get("Retry-After") == "" || r.Body["error"] != "rate limited" {
				t.Fatalf("refusal: %v %s", r.Header, r.Raw)
			}
			break
		}
		expect(t, r, 200, "")
	}
	if !limited {
		t.Fatal("400 profile edits by one user in a row were all accepted")
	}
	if n := e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'member_updated'`, o.meshID); n > 310 {
		t.Fatalf("%d member_updated events", n)
	}
	// Another user is not affected.
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/member/"+bob.MemberID, o.ownerToken, map[string]any{"roleTag": "ok"}), 200, "")
}

// With BROKER_LEGACY_AUTH=1 a body user_id is a credential, and user ids are no secret
// (members see each other's dashboardUserId): the permissions routes, which were never on
// the legacy list, do not take one.
func TestAttackLegacyUserIDDoesNotReachPermissions(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_LEGACY_AUTH": "1"})
	o := e.createMesh("legacy")
	bob, _ := e.member(o.meshID, "bob", "member")
	path := "/cli/mesh/" + o.slug + "/permissions"
	grant := map[string]any{"user_id": o.ownerID, "member_id": bob.MemberID, "permissions": map[string]bool{"canManagePermissions": true}}
	expect(t, e.call("POST", path, "", grant), 401, "missing_bearer_token")
	expect(t, e.call("GET", path+"?user_id="+o.ownerID, "", nil), 401, "missing_bearer_token")
	if n := e.count(`SELECT count(*) FROM permissions WHERE member_id = $1`, bob.MemberID); n != 0 {
		t.Fatal("a legacy user_id set permissions")
	}
}

// /cli-sync names an account, not a key: a member of a mesh with a sync token of its own
// presenting another member's public key (public to every peer) must not rename that member
// or link it to its account. With peer_sig, the key's holder links it.
func TestAttackCliSyncCannotClaimAnotherMembersKey(t *testing.T) {
	e := newEnv(t, nil)
	mesh := e.mesh("synced", false)
	victimPub, victimSec := client.NewKey()
	e.exec(`INSERT INTO members (id, mesh_id, peer_pubkey, display_name) VALUES ('m-victim', $1, $2, 'victim')`, mesh, victimPub)
	claims := syncClaims("u-attacker", map[string]any{"id": mesh, "role": "admin"})
	body := map[string]any{"sync_token": signJWT(syncSecret, hs256, claims), "peer_pubkey": victimPub, "display_name": "pwned"}
	r := e.call("POST", "/cli-sync", "", body)
	expect(t, r, 400, "no valid meshes found in sync token")
	if n := e.count(`SELECT count(*) FROM members WHERE id = 'm-victim' AND display_name = 'victim' AND dashboard_user_id IS NULL AND user_id IS NULL`); n != 1 {
		t.Fatal("a public key alone renamed or linked another member")
	}
	// A signature by another key, or over another jti, is refused.
	_, otherSec := client.NewKey()
	body["peer_sig"] = hex.EncodeToString(ed25519.Sign(otherSec, api.SyncProofMessage(claims["jti"].(string))))
	expect(t, e.call("POST", "/cli-sync", "", body), 400, "peer_sig does not verify")
	body["peer_sig"] = hex.EncodeToString(ed25519.Sign(victimSec, api.SyncProofMessage("another")))
	expect(t, e.call("POST", "/cli-sync", "", body), 400, "peer_sig does not verify")
	// The key's holder proves it and links its member (the token was not used up above).
	body["peer_sig"] = hex.EncodeToString(ed25519.Sign(victimSec, api.SyncProofMessage(claims["jti"].(string))))
	r = e.call("POST", "/cli-sync", "", body)
	expect(t, r, 200, "")
	if n := e.count(`SELECT count(*) FROM members WHERE id = 'm-victim' AND dashboard_user_id = 'u-attacker' AND role = 'member'`); n != 1 {
		t.Fatal("a proven key was not linked (or its role changed)")
	}
}

// A v1 invite's role, expiry and mesh are the signed ones, and the row's role decides: a
// member invite's token with an admin invite's (validly signed) payload admits a member;
// edited payload fields break the signature; a payload signed by another key is refused;
// an archived mesh's invites admit nobody, by token or by code.
func TestAttackInviteForgeryAndReplay(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_INVITE_V2_ENABLED": "1"})
	m := e.ownedMesh("forgery")
	memberTok := e.invite(m, map[string]any{}).Body["token"].(string)
	adminTok := e.invite(m, map[string]any{"role": "admin"}).Body["token"].(string)

	pub, _ := client.NewKey()
	body := joinBody(t, memberTok, pub, "mallory")
	body["invite_payload"] = joinBody(t, adminTok, pub, "x")["invite_payload"]
	r := e.call("POST", "/join", "", body)
	expect(t, r, 200, "")
	if role := scalar[string](e, `SELECT role FROM members WHERE id = $1`, r.Body["memberId"]); role != "member" {
		t.Fatalf("a member invite admitted an %s", role)
	}

	inv := e.invite(m, map[string]any{}).Body["token"].(string)
	for field, v := range map[string]any{"role": "admin", "expires_at": time.Now().Add(1000 * time.Hour).Unix(), "mesh_slug": "other"} {
		b := joinBody(t, inv, pub, "m")
		p := b["invite_payload"]
		raw := map[string]any{}
		rawJSON, _ := json.Marshal(p)
		_ = json.Unmarshal(rawJSON, &raw)
		raw[field] = v
		b["invite_payload"] = raw
		pk, _ := client.NewKey()
		b["peer_pubkey"] = pk
		expect(t, e.call("POST", "/join", "", b), 400, "invite_bad_signature")
	}
	// A payload for this mesh signed by a key of the attacker's own.
	_, sec := client.NewKey()
	forged, _ := invite.DecodeToken(inv)
	forged.Role = "admin"
	forged.Sign(sec)
	pk, _ := client.NewKey()
	expect(t, e.call("POST", "/join", "", map[string]any{"invite_token": forged.Token(), "invite_payload": forged, "peer_pubkey": pk, "display_name": "m"}), 400, "invite_owner_mismatch")
	if n := scalar[int](e, `SELECT used_count FROM invites WHERE token = $1`, inv); n != 0 {
		t.Fatalf("refused joins used %d uses", n)
	}

	// Archived: the invite is dead by token and by code.
	gone := e.ownedMesh("gone")
	ginv := e.invite(gone, map[string]any{})
	expect(t, e.call("DELETE", "/cli/mesh/"+gone.Slug, gone.OwnerToken, nil), 200, "")
	pk, _ = client.NewKey()
	expect(t, e.call("POST", "/join", "", joinBody(t, ginv.Body["token"].(string), pk, "late")), 400, "mesh_not_found")
	cb, _, _ := claimBody(t, pk)
	expect(t, e.call("POST", "/invites/"+ginv.Body["code"].(string)+"/claim", "", cb), 404, "not_found")
	if n := e.count(`SELECT count(*) FROM members WHERE mesh_id = $1`, gone.ID); n != 0 {
		t.Fatalf("%d members joined an archived mesh", n)
	}
}

// Device-code identifiers are not interchangeable: the session id and the user code (which
// the web app sees) never collect the bearer; only the device code does, once. A bearer
// approves only for its own user.
func TestAttackDeviceCodeIdentifierConfusion(t *testing.T) {
	e := newEnv(t, nil)
	bobID, bobTok := e.user("bob@example.com")
	aliceID, _ := e.user("alice@example.com")
	start := e.startLogin(map[string]any{"hostname": "h"})
	dc, uc, sid := str(start, "device_code"), str(start, "user_code"), str(start, "session_id")
	expect(t, e.call("POST", "/cli/device-code/"+uc+"/approve", bobTok, map[string]any{"user_id": aliceID, "email": "alice@example.com"}), 403, "forbidden")
	expect(t, e.call("POST", "/cli/device-code/"+dc+"/approve", bobTok, map[string]any{"user_id": bobID, "email": "bob@example.com"}), 404, "")
	expect(t, e.call("POST", "/cli/device-code/"+strings.ToLower(uc)+"/approve", bobTok, map[string]any{"user_id": bobID, "email": "bob@example.com"}), 200, "")
	for _, c := range []string{sid, uc, strings.ToLower(dc)} {
		if r := e.call("GET", "/cli/device-code/"+c, "", nil); r.Body["session_token"] != nil || r.Body["status"] == "approved" {
			t.Fatalf("poll by %q collected: %s", c, r.Raw)
		}
	}
	r := e.call("GET", "/cli/device-code/"+dc, "", nil)
	if r.Body["status"] != "approved" || r.Body["user"].(map[string]any)["id"] != bobID {
		t.Fatalf("poll by the device code: %s", r.Raw)
	}
	expect(t, e.call("POST", "/cli/device-code/"+sid+"/approve", appSecret, map[string]any{"user_id": aliceID, "email": "alice@example.com"}), 409, "Code already approved")
	if r := e.call("GET", "/cli/device-code/"+dc, "", nil); r.Body["status"] != "consumed" {
		t.Fatalf("second poll: %s", r.Raw)
	}
}

// Starting a login is open to anyone, and 10 000 waiting codes lock everyone out: one
// address may hold only 10 of them.
func TestAttackDeviceCodesPerAddressAreBounded(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 10; i++ {
		e.startLogin(map[string]any{})
	}
	r := e.call("POST", "/cli/device-code", "", map[string]any{})
	expect(t, r, http.StatusTooManyRequests, "Too many logins in progress from this address, try again later")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	if n := e.count(`SELECT count(*) FROM device_codes`); n != 10 {
		t.Fatalf("%d device codes", n)
	}
	// Codes that expired no longer count.
	e.exec(`UPDATE device_codes SET expires_at = now() - interval '1 second'`)
	e.startLogin(map[string]any{})
}

// A mesh's members are bounded (5000 unrevoked, what the listings show): a join or claim
// beyond is refused and consumes no use.
func TestAttackMembersPerMeshAreBounded(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_INVITE_V2_ENABLED": "1"})
	m := e.ownedMesh("crowd")
	e.exec(`INSERT INTO members (id, mesh_id, peer_pubkey, display_name) SELECT 'c' || g, $1, md5(g::text) || md5(g::text), 'x' FROM generate_series(1, 5000) g`, m.ID)
	inv := e.invite(m, map[string]any{})
	pub, _ := client.NewKey()
	expect(t, e.call("POST", "/join", "", joinBody(t, inv.Body["token"].(string), pub, "late")), 400, "mesh_full")
	cb, _, _ := claimBody(t, pub)
	expect(t, e.call("POST", "/invites/"+inv.Body["code"].(string)+"/claim", "", cb), 409, "mesh_full")
	if n := scalar[int](e, `SELECT used_count FROM invites WHERE id = $1`, inv.Body["invite_id"]); n != 0 {
		t.Fatalf("refused joins used %d uses", n)
	}
	e.exec(`UPDATE members SET revoked_at = now() WHERE id = 'c1'`)
	expect(t, e.call("POST", "/join", "", joinBody(t, inv.Body["token"].(string), pub, "late")), 200, "")
}
