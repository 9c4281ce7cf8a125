package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

// ownedMesh authenticates the caller (bearer only) and loads the path's live mesh, which it
// must own: 404 Mesh not found, 403 Only the owner can manage invites.
func (a *API) ownedMesh(c *Call) (db.Mesh, string, error) {
	who, err := a.Authenticate(c, "")
	if err != nil {
		return db.Mesh{}, "", err
	}
	slug := c.R.PathValue("slug")
	if !storable(slug) {
		return db.Mesh{}, "", Fail(http.StatusNotFound, "Mesh not found")
	}
	mesh, err := a.q.InviteMeshBySlug(c.R.Context(), slug)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Mesh{}, "", Fail(http.StatusNotFound, "Mesh not found")
	}
	if err != nil {
		return db.Mesh{}, "", fmt.Errorf("load mesh: %w", err)
	}
	if mesh.OwnerUserID == nil || *mesh.OwnerUserID != who.UserID {
		return db.Mesh{}, "", Fail(http.StatusForbidden, "Only the owner can manage invites")
	}
	caller, err := a.q.CallerMember(c.R.Context(), db.CallerMemberParams{MeshID: mesh.ID, UserID: who.UserID})
	if err != nil {
		return db.Mesh{}, "", fmt.Errorf("look up caller: %w", err)
	}
	return mesh, caller.MemberID, nil
}

// inviteList is GET /cli/mesh/{slug}/invites: the owner's view of its mesh's invites
// (never their tokens).
func inviteList(a *API, c *Call) error {
	mesh, _, err := a.ownedMesh(c)
	if err != nil {
		return err
	}
	list, err := invitestore.List(c.R.Context(), a.q, mesh.ID)
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"invites": list})
}

// inviteRevoke is DELETE /cli/mesh/{slug}/invite/{invite}: the owner revokes an invite by id
// or code — a leaked link stops admitting anyone at once.
func inviteRevoke(a *API, c *Call) error {
	mesh, actor, err := a.ownedMesh(c)
	if err != nil {
		return err
	}
	ref := c.R.PathValue("invite")
	if !storable(ref) || len(ref) > 64 {
		return Fail(http.StatusNotFound, "Invite not found")
	}
	id, err := invitestore.Revoke(c.R.Context(), a.pool, mesh.ID, ref, actor)
	if errors.Is(err, invitestore.ErrNoInvite) {
		return Fail(http.StatusNotFound, "Invite not found")
	}
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true, "inviteId": id, "revoked": true})
}
