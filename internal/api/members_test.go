package api_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/client"
)

func TestListMembers(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("people")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	dial(t, e.inst.WS, bob)
	_, stranger := e.user("s@example.com")
	path := "/mesh/" + o.meshID + "/members"
	expect(t, e.call("GET", path, "", nil), 401, "missing_bearer_token")
	expect(t, e.call("GET", path, stranger, nil), 403, "caller not a member of this mesh")
	expect(t, e.call("GET", "/mesh/nope/members", bobToken, nil), 400, "mesh not found")
	r := e.call("GET", path, bobToken, nil)
	expect(t, r, 200, "")
	if r.Body["ok"] != true || len(r.Body["members"].([]any)) != 2 {
		t.Fatalf("members: %s", r.Raw)
	}
	for _, m := range r.Body["members"].([]any) {
		mm := m.(map[string]any)
		online := mm["id"] == bob.MemberID
		if mm["online"] != online {
			t.Fatalf("member %v online=%v", mm["displayName"], mm["online"])
		}
	}
}

// A member edits its own profile within the mesh's policy; its live session on another
// instance is told (profile_updated); admins edit anyone; the policy is the admins'.
func TestPatchMemberAndSettings(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("profiles")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	_, carolToken := e.member(o.meshID, "carol", "member")
	second := e.second()
	b := dial(t, second.WS, bob)
	_, stranger := e.user("s@example.com")
	path := "/mesh/" + o.meshID + "/member/" + bob.MemberID

	expect(t, e.call("PATCH", path, "", map[string]any{"roleTag": "x"}), 401, "missing_bearer_token")
	expect(t, e.call("PATCH", path, stranger, map[string]any{"roleTag": "x"}), 403, "caller not a member of this mesh")
	expect(t, e.call("PATCH", path, carolToken, map[string]any{"roleTag": "x"}), 403, "not authorized — only admins or self can edit")
	expect(t, e.call("PATCH", path, bobToken, map[string]any{}), 400, "no fields to update")
	expect(t, e.call("PATCH", path, bobToken, map[string]any{"permission": "admin"}), 400, "admin-managed fields: permission")
	expect(t, e.call("PATCH", path, bobToken, map[string]any{"messageMode": "loud"}), 400, "messageMode must be push, inbox or off")
	expect(t, e.call("PATCH", path, bobToken, "[1,2"), 400, "invalid JSON")
	expect(t, e.call("PATCH", "/mesh/"+o.meshID+"/member/nobody", bobToken, map[string]any{"roleTag": "x"}), 404, "member not found")

	r := e.call("PATCH", path, bobToken, map[string]any{"roleTag": "reviewer", "groups": []map[string]string{{"name": "ops"}}})
	expect(t, r, 200, "")
	if r.Body["member"].(map[string]any)["roleTag"] != "reviewer" {
		t.Fatalf("patched: %s", r.Raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		f, err := b.Next(ctx, "push")
		if err != nil {
			t.Fatalf("no profile_updated on the member's socket: %v", err)
		}
		if f.Str("event") == "profile_updated" {
			var data map[string]any
			raw, _ := json.Marshal(f["eventData"])
			_ = json.Unmarshal(raw, &data)
			if data["roleTag"] != "reviewer" || f.Str("senderPubkey") != "system" {
				t.Fatalf("profile_updated: %v", f)
			}
			break
		}
	}
	// The next hello reports the new profile.
	b2, err := client.Dial(ctx, e.inst.WS, bob, client.Options{SessionID: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Drop()
	if prof, _ := b2.Ack["memberProfile"].(map[string]any); prof["roleTag"] != "reviewer" {
		t.Fatalf("hello_ack memberProfile: %v", b2.Ack["memberProfile"])
	}

	// Settings: admins only; then roleTag is admin-managed for bob, but not for the owner.
	settings := "/mesh/" + o.meshID + "/settings"
	off := map[string]any{"selfEditable": map[string]any{"roleTag": false}}
	expect(t, e.call("PATCH", settings, "", off), 401, "missing_bearer_token")
	expect(t, e.call("PATCH", settings, bobToken, off), 403, "admin access required")
	expect(t, e.call("PATCH", settings, o.ownerToken, map[string]any{"selfEditable": map[string]any{}}), 400, "no settings to update")
	expect(t, e.call("PATCH", settings, o.ownerToken, off), 200, "")
	expect(t, e.call("PATCH", path, bobToken, map[string]any{"roleTag": "boss", "displayName": "Bob"}), 400, "admin-managed fields: roleTag")
	r = e.call("PATCH", path, o.ownerToken, map[string]any{"roleTag": "boss", "permission": "admin"})
	expect(t, r, 200, "")
	if m := r.Body["member"].(map[string]any); m["roleTag"] != "boss" || m["permission"] != "admin" {
		t.Fatalf("admin edit: %s", r.Raw)
	}
	if pol, _ := b2.Ack["meshPolicy"].(map[string]any); pol == nil {
		t.Fatalf("hello_ack has no meshPolicy: %v", b2.Ack)
	}
}

// Revoking a member over the API closes its sockets on another instance within 2 s
// (4002 revoked), refuses its next hello, and is audited.
func TestRevokeMemberOverAPI(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("revokes")
	bob, _ := e.member(o.meshID, "bob", "member")
	carol, carolToken := e.member(o.meshID, "carol", "member")
	second := e.second()
	b := dial(t, second.WS, bob)
	c := dial(t, second.WS, carol)
	path := "/mesh/" + o.meshID + "/member/" + bob.MemberID

	expect(t, e.call("DELETE", path, "", nil), 401, "missing_bearer_token")
	expect(t, e.call("DELETE", path, carolToken, nil), 403, "not authorized — only admins or self can revoke")
	stillOpenFor(t, b, 100*time.Millisecond)
	r := e.call("DELETE", path, o.ownerToken, nil)
	expect(t, r, 200, "")
	closedWith(t, b, 4002, "revoked")
	stillOpenFor(t, c, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Dial(ctx, second.WS, bob, client.Options{SessionID: "again"}); err == nil {
		t.Fatal("revoked member connected again")
	}
	expect(t, e.call("DELETE", path, o.ownerToken, nil), 404, "member not found")
	if n := e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'member_revoked'`, o.meshID); n != 1 {
		t.Fatal("no member_revoked audit row")
	}
	// A member may leave by revoking itself.
	expect(t, e.call("DELETE", "/mesh/"+o.meshID+"/member/"+carol.MemberID, carolToken, nil), 200, "")
	closedWith(t, c, 4002, "revoked")
}

// Kicking one session closes just that socket 4001 kicked, wherever it is held; the
// member's other session stays, and peers see peer_left.
func TestKickSession(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("kicks")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	carol, carolToken := e.member(o.meshID, "carol", "member")
	second := e.second()
	b1 := dial(t, second.WS, bob)
	b2 := dial(t, e.inst.WS, bob)
	watcher := dial(t, e.inst.WS, carol)
	presence := b1.Ack.Str("presenceId")
	path := "/mesh/" + o.meshID + "/session/" + presence

	expect(t, e.call("DELETE", path, "", nil), 401, "missing_bearer_token")
	expect(t, e.call("DELETE", path, carolToken, nil), 403, "not authorized — only admins or self can kick")
	expect(t, e.call("DELETE", "/mesh/"+o.meshID+"/session/nope", bobToken, nil), 404, "session not found")
	expect(t, e.call("DELETE", path, bobToken, nil), 200, "")
	closedWith(t, b1, 4001, "kicked")
	stillOpenFor(t, b2, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		f, err := watcher.Next(ctx, "push")
		if err != nil {
			t.Fatalf("no peer_left after the kick: %v", err)
		}
		if f.Str("event") == "peer_left" {
			break
		}
	}
	// Gone: kicking again finds nothing. A session in its grace window is ended at once.
	expect(t, e.call("DELETE", path, o.ownerToken, nil), 404, "session not found")
	p2 := b2.Ack.Str("presenceId")
	_ = b2.Drop()
	deadline := time.Now().Add(3 * time.Second)
	for e.count(`SELECT count(*) FROM presences WHERE id = $1 AND disconnected_at IS NOT NULL AND ended_at IS NULL`, p2) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("dropped session never entered its grace window")
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect(t, e.call("DELETE", "/mesh/"+o.meshID+"/session/"+p2, o.ownerToken, nil), 200, "")
	if n := e.count(`SELECT count(*) FROM presences WHERE id = $1 AND ended_at IS NOT NULL AND end_reason = 'kicked'`, p2); n != 1 {
		t.Fatal("the kicked presence in its grace window was not ended")
	}
}

// stillOpenFor checks c is not closed during d.
func stillOpenFor(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
		t.Fatalf("socket closed: %v", c.Err())
	case <-time.After(d):
	}
}

// An admin manages the other members, but not the owner's: it can neither demote, revoke
// nor kick them; the owner manages admins.
func TestAdminsCannotActOnTheOwnersMembers(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("owned")
	admin, adminToken := e.member(o.meshID, "admin", "admin")
	sess := dial(t, e.inst.WS, o.owner)
	mesh := "/mesh/" + o.meshID
	expect(t, e.call("PATCH", mesh+"/member/"+o.owner.MemberID, adminToken, map[string]any{"permission": "member"}),
		403, "not authorized — only the owner edits the owner's members")
	expect(t, e.call("DELETE", mesh+"/member/"+o.owner.MemberID, adminToken, nil),
		403, "not authorized — only the owner revokes the owner's members")
	expect(t, e.call("DELETE", mesh+"/session/"+sess.Ack.Str("presenceId"), adminToken, nil),
		403, "not authorized — only the owner kicks the owner's sessions")
	stillOpenFor(t, sess, 100*time.Millisecond)
	// The owner acts on the admin.
	expect(t, e.call("PATCH", mesh+"/member/"+admin.MemberID, o.ownerToken, map[string]any{"permission": "member"}), 200, "")
}
