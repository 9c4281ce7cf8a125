package api

import (
	"errors"
	"net/http"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

// ownedMesh authenticates the caller (legacyUserID as Authenticate takes it) and loads the
// path's live mesh, which the caller must own: 404 Mesh not found, 403 forbidden.
func (a *API) ownedMesh(c *Call, legacyUserID, forbidden string) (db.Mesh, db.CallerMemberRow, Principal, error) {
	who, err := a.Authenticate(c, legacyUserID)
	if err != nil {
		return db.Mesh{}, db.CallerMemberRow{}, Principal{}, err
	}
	mesh, caller, err := a.meshForCaller(c.R.Context(), c.R.PathValue("slug"), who.UserID)
	if err != nil {
		return db.Mesh{}, db.CallerMemberRow{}, Principal{}, err
	}
	if !caller.IsOwner {
		return db.Mesh{}, db.CallerMemberRow{}, Principal{}, Fail(http.StatusForbidden, forbidden)
	}
	return mesh, caller, who, nil
}

// manageInvites is the refusal of a non-owner on the invite listing and revocation.
const manageInvites = "Only the owner can manage invites"

// inviteList is GET /cli/mesh/{slug}/invites: the owner's view of its mesh's invites
// (never their tokens).
func inviteList(a *API, c *Call) error {
	mesh, _, _, err := a.ownedMesh(c, "", manageInvites)
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
	mesh, caller, _, err := a.ownedMesh(c, "", manageInvites)
	if err != nil {
		return err
	}
	ref := c.R.PathValue("invite")
	if !storable(ref) || len(ref) > 64 {
		return Fail(http.StatusNotFound, "Invite not found")
	}
	id, err := invitestore.Revoke(c.R.Context(), a.pool, mesh.ID, ref, caller.MemberID)
	if errors.Is(err, invitestore.ErrNoInvite) {
		return Fail(http.StatusNotFound, "Invite not found")
	}
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true, "inviteId": id, "revoked": true})
}
