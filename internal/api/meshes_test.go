package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
)

// owned is a mesh created over the API by its owner.
type owned struct {
	meshID, slug string
	ownerID      string // user
	ownerToken   string
	owner        client.Identity // the owner's first member
}

// createMesh creates a mesh over POST /cli/mesh/create as a new user.
func (e *env) createMesh(name string) owned {
	e.t.Helper()
	userID, token := e.user(name + "@example.com")
	pub, sec := client.NewKey()
	r := e.call("POST", "/cli/mesh/create", token, map[string]any{"name": name, "pubkey": pub})
	expect(e.t, r, http.StatusOK, "")
	o := owned{meshID: r.Body["id"].(string), slug: r.Body["slug"].(string), ownerID: userID, ownerToken: token}
	o.owner = client.Identity{MeshID: o.meshID, MemberID: r.Body["member_id"].(string), Pubkey: pub, Secret: sec}
	return o
}

// member adds a member linked to a new user (role member or admin) and returns its
// identity and the user's bearer.
func (e *env) member(meshID, name, role string) (client.Identity, string) {
	e.t.Helper()
	userID, token := e.user(name + "-" + ids.New()[:6] + "@example.com")
	pub, sec := client.NewKey()
	id := ids.New()
	if _, err := e.d.Pool.Exec(context.Background(),
		`INSERT INTO members (id, mesh_id, user_id, peer_pubkey, display_name, role) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, meshID, userID, pub, name, role); err != nil {
		e.t.Fatal(err)
	}
	return client.Identity{MeshID: meshID, MemberID: id, Pubkey: pub, Secret: sec}, token
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.d.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func dial(t *testing.T, ws string, id client.Identity) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ws, id, client.Options{SessionID: ids.New(), Cwd: "/w/" + ids.New()[:6]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Drop() })
	return c
}

// closedWith waits (2 s at most) for c to be closed by the broker with code and reason.
func closedWith(t *testing.T, c *client.Client, code websocket.StatusCode, reason string) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Fatalf("socket not closed within 2 s (want %d %s)", code, reason)
	}
	var ce websocket.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != code || ce.Reason != reason {
		t.Fatalf("closed with %v, want %d %s", c.Err(), code, reason)
	}
}

func TestCreateMesh(t *testing.T) {
	e := newEnv(t, nil)
	_, token := e.user("a@example.com")
	pub, _ := client.NewKey()

	expect(t, e.call("POST", "/cli/mesh/create", "", map[string]any{"name": "x", "pubkey": pub}), 401, "missing_bearer_token")
	expect(t, e.call("POST", "/cli/mesh/create", "nope", map[string]any{"name": "x", "pubkey": pub}), 401, "invalid_or_revoked_token")
	expect(t, e.call("POST", "/cli/mesh/create", token, "{not json"), 400, "Invalid body")
	expect(t, e.call("POST", "/cli/mesh/create", token, map[string]any{"pubkey": pub}), 400, "name required")
	// A bad pubkey writes nothing (the original had already inserted the mesh).
	expect(t, e.call("POST", "/cli/mesh/create", token, map[string]any{"name": "Team X", "pubkey": "abc"}), 400, "pubkey required (64 hex chars)")
	expect(t, e.call("POST", "/cli/mesh/create", token, map[string]any{"name": "Team X", "pubkey": pub, "slug": "Bad Slug"}), 400, "")
	if n := e.count(`SELECT count(*) FROM meshes`); n != 0 {
		t.Fatalf("%d meshes after refused creates", n)
	}

	r := e.call("POST", "/cli/mesh/create", token, map[string]any{"name": "Team X!", "pubkey": pub})
	expect(t, r, 200, "")
	if r.Body["slug"] != "team-x" || r.Body["name"] != "Team X!" || r.Body["member_id"] == "" {
		t.Fatalf("created: %s", r.Raw)
	}
	r2 := e.call("POST", "/cli/mesh/create", token, map[string]any{"name": "team x", "pubkey": pub})
	if r2.Body["slug"] != "team-x-2" {
		t.Fatalf("second slug: %s", r2.Raw)
	}
	// The owner's member is an admin linked to the user, and it was audited.
	if n := e.count(`SELECT count(*) FROM members WHERE id = $1 AND role = 'admin' AND user_id IS NOT NULL AND display_name = 'Team X!-owner'`, r.Body["member_id"]); n != 1 {
		t.Fatal("owner member not stored as admin of the user")
	}
	if n := e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'member_joined'`, r.Body["id"]); n != 1 {
		t.Fatal("no member_joined audit row")
	}
}

func TestListMeshesCountsSessionsOnEveryInstance(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("alpha")
	second := e.second()
	dial(t, second.WS, o.owner)
	bob, bobToken := e.member(o.meshID, "bob", "member")
	_ = bob
	r := e.call("GET", "/cli/meshes", o.ownerToken, nil)
	expect(t, r, 200, "")
	meshes := r.Body["meshes"].([]any)
	if len(meshes) != 1 {
		t.Fatalf("meshes: %s", r.Raw)
	}
	m := meshes[0].(map[string]any)
	if m["active_peers"] != float64(1) || m["member_count"] != float64(2) || m["is_owner"] != true || m["role"] != "admin" {
		t.Fatalf("mesh: %v", m)
	}
	if m["broker_url"] != "ws://"+e.inst.HTTP[len("http://"):]+"/ws" {
		t.Fatalf("broker_url %v", m["broker_url"])
	}
	r = e.call("GET", "/cli/meshes", bobToken, nil)
	m = r.Body["meshes"].([]any)[0].(map[string]any)
	if m["is_owner"] != false || m["role"] != "member" {
		t.Fatalf("bob's view: %v", m)
	}
	_, stranger := e.user("s@example.com")
	r = e.call("GET", "/cli/meshes", stranger, nil)
	if len(r.Body["meshes"].([]any)) != 0 {
		t.Fatalf("a stranger sees %s", r.Raw)
	}
}

// A grants change made through one instance applies to a send on another at once.
func TestGrantsApplyToRoutingAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("grants")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	second := e.second()
	alice := dial(t, second.WS, o.owner)
	dial(t, e.inst.WS, bob)

	_, stranger := e.user("s@example.com")
	path := "/cli/mesh/" + o.slug + "/grants"
	block := map[string]any{"grants": map[string]any{o.owner.Pubkey: []string{}}}
	expect(t, e.call("POST", path, "", block), 401, "missing_bearer_token")
	expect(t, e.call("POST", path, stranger, block), 403, "Not a member of this mesh")
	expect(t, e.call("POST", "/cli/mesh/nope/grants", bobToken, block), 404, "Mesh not found")
	expect(t, e.call("POST", path, bobToken, map[string]any{"grants": map[string]any{}}), 400, "grants required")
	expect(t, e.call("POST", path, bobToken, map[string]any{"grants": map[string]any{"zz": []string{"dm"}}}), 400, "grant keys must be 64 hex chars")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send := func() client.Frame {
		t.Helper()
		ack, err := alice.Send(ctx, client.Message{Target: bob.Pubkey, Priority: "now", Nonce: "bm9uY2U=", Ciphertext: "Y2lwaGVy"})
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	if ack := send(); ack["queued"] != true {
		t.Fatalf("before the block: %v", ack)
	}
	r := e.call("POST", path, bobToken, block)
	expect(t, r, 200, "")
	if g, _ := r.Body["grants"].(map[string]any); len(g) != 1 {
		t.Fatalf("merged grants: %s", r.Raw)
	}
	if ack := send(); ack["queued"] != false || ack["error"] != "blocked by recipient grants (sender lacks dm capability)" {
		t.Fatalf("after the block: %v", ack)
	}
	// null deletes the entry: defaults again.
	r = e.call("POST", path, bobToken, map[string]any{"grants": map[string]any{o.owner.Pubkey: nil}})
	if g, _ := r.Body["grants"].(map[string]any); len(g) != 0 {
		t.Fatalf("after delete: %s", r.Raw)
	}
	if ack := send(); ack["queued"] != true {
		t.Fatalf("after unblocking: %v", ack)
	}
	if n := e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'grants_changed'`, o.meshID); n != 2 {
		t.Fatalf("%d grants_changed audit rows, want 2", n)
	}
}

// Deleting a mesh closes its sockets on every instance, and its members cannot come back.
func TestDeleteMeshClosesSocketsEverywhere(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("doomed")
	bob, bobToken := e.member(o.meshID, "bob", "admin")
	second := e.second()
	a := dial(t, e.inst.WS, o.owner)
	b := dial(t, second.WS, bob)

	expect(t, e.call("DELETE", "/cli/mesh/"+o.slug, "", nil), 401, "missing_bearer_token")
	expect(t, e.call("DELETE", "/cli/mesh/"+o.slug, bobToken, nil), 403, "Only the mesh owner can delete it")
	r := e.call("DELETE", "/cli/mesh/"+o.slug, o.ownerToken, nil)
	expect(t, r, 200, "")
	if r.Body["deleted"] != o.slug {
		t.Fatalf("delete: %s", r.Raw)
	}
	closedWith(t, a, 4002, "mesh_deleted")
	closedWith(t, b, 4002, "mesh_deleted")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, second.WS, bob, client.Options{SessionID: ids.New()})
	var refused *client.RefusedError
	if !errors.As(err, &refused) || refused.Code != "unauthorized" {
		t.Fatalf("hello after delete: %v", err)
	}
	expect(t, e.call("DELETE", "/cli/mesh/"+o.slug, o.ownerToken, nil), 404, "Mesh not found")
	if r := e.call("GET", "/cli/meshes", o.ownerToken, nil); len(r.Body["meshes"].([]any)) != 0 {
		t.Fatalf("archived mesh still listed: %s", r.Raw)
	}
	if n := e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'mesh_deleted'`, o.meshID); n != 1 {
		t.Fatal("no mesh_deleted audit row")
	}
	// Both presences ended (peer_left), none left in a grace window.
	deadline := time.Now().Add(3 * time.Second)
	for e.count(`SELECT count(*) FROM presences WHERE mesh_id = $1 AND ended_at IS NULL`, o.meshID) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("presences of the deleted mesh not ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPermissions(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("perms")
	bob, bobToken := e.member(o.meshID, "bob", "member")
	_, stranger := e.user("s@example.com")
	path := "/cli/mesh/" + o.slug + "/permissions"

	expect(t, e.call("GET", path, "", nil), 401, "missing_bearer_token")
	expect(t, e.call("GET", path, stranger, nil), 403, "Not a member of this mesh")
	r := e.call("GET", path, bobToken, nil)
	expect(t, r, 200, "")
	perms := map[string]map[string]any{}
	for _, m := range r.Body["members"].([]any) {
		mm := m.(map[string]any)
		perms[mm["member_id"].(string)] = mm["permissions"].(map[string]any)
	}
	if perms[o.owner.MemberID]["canDeleteMesh"] != true || perms[bob.MemberID]["canInvite"] != false || perms[bob.MemberID]["canSend"] != true {
		t.Fatalf("defaults: %v", perms)
	}

	grant := map[string]any{"requester_id": "ignored", "member_id": bob.MemberID, "permissions": map[string]bool{"canInvite": true}}
	expect(t, e.call("POST", path, "", grant), 401, "missing_bearer_token")
	expect(t, e.call("POST", path, stranger, grant), 403, "Not a member of this mesh")
	// requester_id in the body names nobody: bob cannot grant himself by naming the owner.
	grant["requester_id"] = o.ownerID
	expect(t, e.call("POST", path, bobToken, grant), 403, "You don't have permission to manage permissions")
	expect(t, e.call("POST", path, o.ownerToken, map[string]any{"member_id": bob.MemberID}), 400, "member_id and permissions required")
	expect(t, e.call("POST", path, o.ownerToken, map[string]any{"member_id": bob.MemberID, "permissions": map[string]bool{"canFly": true}}), 400, "unknown permission: canFly")
	expect(t, e.call("POST", path, o.ownerToken, map[string]any{"member_id": "nobody", "permissions": map[string]bool{"canInvite": true}}), 404, "Member not found")
	expect(t, e.call("POST", path, o.ownerToken, grant), 200, "")
	r = e.call("GET", path, bobToken, nil)
	for _, m := range r.Body["members"].([]any) {
		mm := m.(map[string]any)
		if mm["member_id"] == bob.MemberID && mm["permissions"].(map[string]any)["canInvite"] != true {
			t.Fatalf("canInvite not stored: %v", mm)
		}
	}
}

// What one user can make the broker store is bounded: live meshes it owns, and grant
// entries on its member.
func TestMeshAndGrantBounds(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("bounds")
	pub, _ := client.NewKey()
	for i := 1; i < 100; i++ {
		expect(t, e.call("POST", "/cli/mesh/create", o.ownerToken, map[string]any{"name": "m", "pubkey": pub}), 200, "")
	}
	r := e.call("POST", "/cli/mesh/create", o.ownerToken, map[string]any{"name": "m", "pubkey": pub})
	expect(t, r, 409, "you own 100 meshes (counting those deleted in the last day), the most one user may")
	// Deleting one frees a place a day later (an archived mesh keeps its rows).
	expect(t, e.call("DELETE", "/cli/mesh/m-2", o.ownerToken, nil), 200, "")
	expect(t, e.call("POST", "/cli/mesh/create", o.ownerToken, map[string]any{"name": "m", "pubkey": pub}), 409, "")
	e.exec(`UPDATE meshes SET archived_at = now() - interval '25 hours' WHERE archived_at IS NOT NULL`)
	expect(t, e.call("POST", "/cli/mesh/create", o.ownerToken, map[string]any{"name": "m", "pubkey": pub}), 200, "")

	path := "/cli/mesh/" + o.slug + "/grants"
	for batch := 0; batch < 4; batch++ {
		g := map[string]any{}
		for i := 0; i < 256; i++ {
			k, _ := client.NewKey()
			g[k] = []string{"dm"}
		}
		expect(t, e.call("POST", path, o.ownerToken, map[string]any{"grants": g}), 200, "")
	}
	k, _ := client.NewKey()
	expect(t, e.call("POST", path, o.ownerToken, map[string]any{"grants": map[string]any{k: []string{"dm"}}}), 400, "too many grant entries: at most 1024 per member")
	if n := e.count(`SELECT count(*) FROM jsonb_object_keys((SELECT peer_grants FROM members WHERE id = $1))`, o.owner.MemberID); n != 1024 {
		t.Fatalf("%d grant entries stored", n)
	}
}
