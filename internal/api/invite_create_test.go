package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

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
	mesh, err := e.q.LiveMesh(context.Background(), m.ID)
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
