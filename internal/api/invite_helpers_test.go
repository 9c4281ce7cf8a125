package api_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/invite"
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

// claimBody is a v2 claim body with a fresh x25519 key (returned with its secret).
func claimBody(t *testing.T, peer string) (map[string]any, *[32]byte, *[32]byte) {
	t.Helper()
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"recipient_x25519_pubkey": base64.RawURLEncoding.EncodeToString(pub[:]), "peer_pubkey": peer}, pub, priv
}
