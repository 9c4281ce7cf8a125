package api

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Mesh permissions (the original's mesh.permission): an explicit row per member overrides
// the defaults of its standing — owner, admin or member. The broker itself enforces none of
// them on the socket (as the original); they are stored for the clients and the web app.

// permissionKeys in the order they are reported.
var permissionKeys = []string{"canInvite", "canDeployMcp", "canManageFiles", "canManageVault", "canManageWatches",
	"canManageWebhooks", "canWriteState", "canSend", "canUseTools", "canDeleteMesh", "canManagePermissions"}

// defaultPermissions by standing.
func defaultPermissions(isOwner bool, role string) map[string]bool {
	p := map[string]bool{}
	for _, k := range permissionKeys {
		switch k {
		case "canWriteState", "canSend", "canUseTools":
			p[k] = true
		case "canDeleteMesh":
			p[k] = isOwner
		default:
			p[k] = isOwner || role == "admin"
		}
	}
	return p
}

// effectivePermissions of one member row.
func effectivePermissions(r db.MeshPermissionsRow, ownerUserID *string) map[string]bool {
	isOwner := ownerUserID != nil && r.UserID != nil && *r.UserID == *ownerUserID
	p := defaultPermissions(isOwner, r.Role)
	explicit := []*bool{r.CanInvite, r.CanDeployMcp, r.CanManageFiles, r.CanManageVault, r.CanManageWatches,
		r.CanManageWebhooks, r.CanWriteState, r.CanSend, r.CanUseTools, r.CanDeleteMesh, r.CanManagePermissions}
	for i, v := range explicit {
		if v != nil {
			p[permissionKeys[i]] = *v
		}
	}
	return p
}

func isOwnerRow(r db.MeshPermissionsRow, ownerUserID *string) bool {
	return ownerUserID != nil && r.UserID != nil && *r.UserID == *ownerUserID
}

// getPermissions is GET /cli/mesh/{slug}/permissions: every member's effective
// permissions, to the mesh's members and owner only (the original answered anyone).
func (a *API) getPermissions(c *Call) error {
	// No legacy user_id: this route was never on the legacy list (docs/http-api.md), and a
	// user id is no secret (members see each other's dashboardUserId).
	p, err := a.Authenticate(c, "")
	if err != nil {
		return err
	}
	mesh, caller, err := a.meshForCaller(c.R.Context(), c.R.PathValue("slug"), p.UserID)
	if err != nil {
		return err
	}
	if caller.MemberID == "" && !caller.IsOwner {
		return Fail(http.StatusForbidden, "Not a member of this mesh")
	}
	rows, err := a.q.MeshPermissions(c.R.Context(), db.MeshPermissionsParams{MeshID: mesh.ID, Lim: maxListedMembers})
	if err != nil {
		return fmt.Errorf("read permissions: %w", err)
	}
	members := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		members = append(members, map[string]any{"member_id": r.MemberID, "display_name": r.DisplayName, "role": r.Role,
			"is_owner": isOwnerRow(r, mesh.OwnerUserID), "permissions": effectivePermissions(r, mesh.OwnerUserID)})
	}
	return c.OK(map[string]any{"mesh": mesh.Slug, "members": members})
}

type setPermissionsBody struct {
	RequesterID string          `json:"requester_id"` // ignored: the caller is the bearer's user
	MemberID    string          `json:"member_id"`
	Permissions map[string]bool `json:"permissions"`
}

// setPermissions is POST /cli/mesh/{slug}/permissions. The caller is the bearer's user, not
// the body's requester_id (which the original trusted); it needs canManagePermissions.
func (a *API) setPermissions(c *Call) error {
	var b setPermissionsBody
	if err := a.Decode(c, &b, "Invalid body", false); err != nil {
		return err
	}
	p, err := a.Authenticate(c, "") // no legacy user_id, as getPermissions
	if err != nil {
		return err
	}
	if b.MemberID == "" || len(b.Permissions) == 0 {
		return Fail(http.StatusBadRequest, "member_id and permissions required")
	}
	for k := range b.Permissions {
		if !slices.Contains(permissionKeys, k) {
			return Fail(http.StatusBadRequest, "unknown permission: "+protocol.TruncateUTF8(k, 64))
		}
	}
	mesh, _, err := a.meshForCaller(c.R.Context(), c.R.PathValue("slug"), p.UserID)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(c.R.Context(), a.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		rows, err := q.MeshPermissions(c.R.Context(), db.MeshPermissionsParams{MeshID: mesh.ID, Lim: maxListedMembers})
		if err != nil {
			return fmt.Errorf("read permissions: %w", err)
		}
		var target *db.MeshPermissionsRow
		callerMay, callerIsMember := false, false
		for i, r := range rows {
			// Only the caller's live members give it standing: a revoked admin's bearer
			// must not keep managing the mesh.
			if r.UserID != nil && *r.UserID == p.UserID && !r.Revoked {
				callerIsMember = true
				callerMay = callerMay || effectivePermissions(r, mesh.OwnerUserID)["canManagePermissions"]
			}
			if r.MemberID == b.MemberID {
				target = &rows[i]
			}
		}
		isOwner := mesh.OwnerUserID != nil && *mesh.OwnerUserID == p.UserID
		switch {
		case !callerIsMember && !isOwner:
			return Fail(http.StatusForbidden, "Not a member of this mesh")
		case !callerMay && !isOwner:
			return Fail(http.StatusForbidden, "You don't have permission to manage permissions")
		case target == nil:
			return Fail(http.StatusNotFound, "Member not found")
		}
		eff := effectivePermissions(*target, mesh.OwnerUserID)
		for k, v := range b.Permissions {
			eff[k] = v
		}
		if err := q.UpsertPermissions(c.R.Context(), db.UpsertPermissionsParams{
			ID: ids.New(), MeshID: mesh.ID, MemberID: target.MemberID,
			CanInvite: eff["canInvite"], CanDeployMcp: eff["canDeployMcp"], CanManageFiles: eff["canManageFiles"],
			CanManageVault: eff["canManageVault"], CanManageWatches: eff["canManageWatches"],
			CanManageWebhooks: eff["canManageWebhooks"], CanWriteState: eff["canWriteState"], CanSend: eff["canSend"],
			CanUseTools: eff["canUseTools"], CanDeleteMesh: eff["canDeleteMesh"], CanManagePermissions: eff["canManagePermissions"],
		}); err != nil {
			return fmt.Errorf("store permissions: %w", err)
		}
		actor := ""
		for _, r := range rows { // the caller's live member, if it has one
			if r.UserID != nil && *r.UserID == p.UserID && !r.Revoked {
				actor = r.MemberID
				break
			}
		}
		return audit.Append(c.R.Context(), q, []audit.Event{{MeshID: mesh.ID, Type: "permissions_changed", ActorID: actor,
			Payload: map[string]any{"memberId": target.MemberID, "permissions": b.Permissions}}}, time.Now())
	})
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true})
}
