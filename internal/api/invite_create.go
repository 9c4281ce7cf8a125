package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

// maxInvitesPerMeshPerDay bounds what an owner's bearer makes for one mesh: each invite is
// a row and an audit event kept for ever, and admits a member.
const maxInvitesPerMeshPerDay = 1000

// inviteCreate is POST /cli/mesh/{slug}/invite (reference §3.6): the mesh owner makes a
// one-use invite valid for 7 days. No e-mail is sent (the broker sends no mail): emailed is
// always false and the caller passes the link on itself.
func inviteCreate(a *API, c *Call) error {
	var body struct {
		Email     any    `json:"email"`
		ExpiresIn any    `json:"expires_in"` // ignored, as by the original
		Role      string `json:"role"`
		UserID    string `json:"user_id"` // BROKER_LEGACY_AUTH only
	}
	if err := a.Decode(c, &body, "Invalid body", true); err != nil {
		return err
	}
	mesh, _, who, err := a.ownedMesh(c, body.UserID, "Only the owner can invite (for now)")
	if err != nil {
		return err
	}
	ctx := c.R.Context()
	role := "member"
	if body.Role == "admin" {
		role = "admin"
	}
	inv, err := invitestore.Create(ctx, a.pool, invitestore.Params{Mesh: mesh, Role: role,
		CreatedBy: &who.UserID, BrokerURL: a.cfg.BrokerURL, AppURL: a.cfg.AppURL, PerDay: maxInvitesPerMeshPerDay})
	if errors.Is(err, invitestore.ErrTooMany) {
		return Fail(http.StatusConflict, fmt.Sprintf("too many invites: at most %d per mesh a day", maxInvitesPerMeshPerDay))
	}
	if err != nil {
		a.log.Error("create invite", "mesh", mesh.ID, "err", err)
		return Fail(http.StatusInternalServerError, "Failed to create invite")
	}
	return c.OK(map[string]any{"url": inv.URL, "code": inv.Code, "expires_at": audit.FormatTime(inv.ExpiresAt),
		"emailed": false, "token": inv.Token, "join_url": inv.Link, "invite_id": inv.ID, "role": inv.Role})
}
