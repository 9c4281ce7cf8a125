package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// standing is what the caller is in a mesh reached by id (/mesh/{meshId}/*).
type standing struct {
	mesh   db.Mesh
	member string // the caller's member there ("" if none)
	admin  bool   // owner, or an admin member
	userID string
}

// standingIn authenticates the caller and loads its standing in the path's mesh: 400 mesh
// not found (as the original), 403 caller not a member of this mesh.
func (a *API) standingIn(c *Call) (standing, error) {
	p, err := a.Authenticate(c, "")
	if err != nil {
		return standing{}, err
	}
	meshID := c.R.PathValue("meshId")
	if !storable(meshID) { // no id holds a NUL; looking it up would fail the statement
		return standing{}, Fail(http.StatusBadRequest, "mesh not found")
	}
	mesh, err := a.q.LiveMesh(c.R.Context(), meshID)
	if errors.Is(err, pgx.ErrNoRows) {
		return standing{}, Fail(http.StatusBadRequest, "mesh not found")
	}
	if err != nil {
		return standing{}, fmt.Errorf("look up mesh: %w", err)
	}
	caller, err := a.q.CallerMember(c.R.Context(), db.CallerMemberParams{MeshID: mesh.ID, UserID: p.UserID})
	if err != nil {
		return standing{}, fmt.Errorf("look up caller: %w", err)
	}
	if caller.MemberID == "" && !caller.IsOwner {
		return standing{}, Fail(http.StatusForbidden, "caller not a member of this mesh")
	}
	return standing{mesh: mesh, member: caller.MemberID, admin: caller.IsOwner || caller.Role == "admin", userID: p.UserID}, nil
}

// target loads a member of the standing's mesh (404 member not found).
func (a *API) target(c *Call, st standing) (db.Member, error) {
	id := c.R.PathValue("memberId")
	if !storable(id) {
		return db.Member{}, Fail(http.StatusNotFound, "member not found")
	}
	m, err := a.q.GetMember(c.R.Context(), id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && m.MeshID != st.mesh.ID) {
		return db.Member{}, Fail(http.StatusNotFound, "member not found")
	}
	if err != nil {
		return db.Member{}, fmt.Errorf("look up member: %w", err)
	}
	return m, nil
}

func (st standing) isSelf(m db.Member) bool { return m.UserID != nil && *m.UserID == st.userID }

// protectsOwner reports whether m belongs to the mesh's owner and the caller is not the
// owner: an admin acts on every member but those (an admin cannot demote, revoke or kick the
// owner's own members; the owner can act on admins).
func (st standing) protectsOwner(m db.Member) bool {
	owner := st.mesh.OwnerUserID
	return owner != nil && m.UserID != nil && *m.UserID == *owner && st.userID != *owner
}

// listMembers is GET /mesh/{meshId}/members (the original answered anyone).
func (a *API) listMembers(c *Call) error {
	st, err := a.standingIn(c)
	if err != nil {
		return err
	}
	rows, err := a.q.MeshMembers(c.R.Context(), db.MeshMembersParams{MeshID: st.mesh.ID, Lim: maxListedMembers})
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	out := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		out = append(out, map[string]any{"id": r.ID, "displayName": r.DisplayName, "roleTag": r.RoleTag,
			"groups": json.RawMessage(r.DefaultGroups), "messageMode": r.MessageMode, "permission": r.Role,
			"dashboardUserId": r.DashboardUserID, "joinedAt": audit.FormatTime(r.JoinedAt), "lastSeenAt": formatTimePtr(r.LastSeenAt),
			"revoked": r.RevokedAt != nil, "online": r.SessionCount > 0, "sessionCount": r.SessionCount})
	}
	return c.OK(map[string]any{"ok": true, "members": out})
}

// patchMemberBody: absent fields are left alone.
type patchMemberBody struct {
	DisplayName *string           `json:"displayName"`
	RoleTag     *string           `json:"roleTag"`
	Groups      *[]protocol.Group `json:"groups"`
	MessageMode *string           `json:"messageMode"`
	Permission  *string           `json:"permission"`
}

// selfEditableFields in the order admin-managed fields are listed.
var selfEditableFields = []string{"displayName", "roleTag", "groups", "messageMode"}

// patchMember is PATCH /mesh/{meshId}/member/{memberId}: admins edit anyone; a member edits
// itself within the mesh's selfEditable policy (permission is admin-only). The member's live
// sessions get profile_updated on every instance.
func (a *API) patchMember(c *Call) error {
	var b patchMemberBody
	if err := a.Decode(c, &b, "invalid JSON", false); err != nil {
		return err
	}
	st, err := a.standingIn(c)
	if err != nil {
		return err
	}
	m, err := a.target(c, st)
	if err != nil {
		return err
	}
	if !st.admin && !st.isSelf(m) {
		return Fail(http.StatusForbidden, "not authorized — only admins or self can edit")
	}
	if st.protectsOwner(m) {
		return Fail(http.StatusForbidden, "not authorized — only the owner edits the owner's members")
	}
	changes := map[string]any{}
	p := db.UpdateMemberProfileParams{ID: m.ID, MeshID: st.mesh.ID}
	if b.DisplayName != nil {
		name := strings.TrimSpace(*b.DisplayName)
		if name == "" || len(name) > protocol.MaxDisplayNameBytes || !storable(name) {
			return Fail(http.StatusBadRequest, fmt.Sprintf("displayName must be 1 to %d bytes", protocol.MaxDisplayNameBytes))
		}
		p.DisplayName, changes["displayName"] = &name, name
	}
	if b.RoleTag != nil {
		if len(*b.RoleTag) > protocol.MaxTitleBytes || !storable(*b.RoleTag) {
			return Fail(http.StatusBadRequest, fmt.Sprintf("roleTag must be at most %d bytes", protocol.MaxTitleBytes))
		}
		p.RoleTag, changes["roleTag"] = b.RoleTag, *b.RoleTag
	}
	if b.Groups != nil {
		if e := protocol.CheckGroups("groups", *b.Groups); e != "" {
			return Fail(http.StatusBadRequest, string(e))
		}
		for _, g := range *b.Groups {
			if !storable(g.Name) || !storable(g.Role) { // jsonb cannot hold \u0000 either
				return Fail(http.StatusBadRequest, "groups contains a NUL character")
			}
		}
		raw, _ := json.Marshal(*b.Groups)
		p.DefaultGroups, changes["groups"] = raw, *b.Groups
	}
	if b.MessageMode != nil {
		if !slices.Contains([]string{"push", "inbox", "off"}, *b.MessageMode) {
			return Fail(http.StatusBadRequest, "messageMode must be push, inbox or off")
		}
		p.MessageMode, changes["messageMode"] = b.MessageMode, *b.MessageMode
	}
	if b.Permission != nil {
		if *b.Permission != "admin" && *b.Permission != "member" {
			return Fail(http.StatusBadRequest, "permission must be admin or member")
		}
		p.Role, changes["permission"] = b.Permission, *b.Permission
	}
	if len(changes) == 0 {
		return Fail(http.StatusBadRequest, "no fields to update")
	}
	if !st.admin {
		var policy map[string]bool
		_ = json.Unmarshal(st.mesh.SelfEditable, &policy)
		var denied []string
		for _, f := range append(slices.Clone(selfEditableFields), "permission") {
			if _, ok := changes[f]; ok && (f == "permission" || !policyAllows(policy, f)) {
				denied = append(denied, f)
			}
		}
		if len(denied) > 0 {
			return Fail(http.StatusBadRequest, "admin-managed fields: "+strings.Join(denied, ", "))
		}
	}
	var updated db.Member
	err = pgx.BeginFunc(c.R.Context(), a.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		var err error
		updated, err = q.UpdateMemberProfile(c.R.Context(), p)
		if errors.Is(err, pgx.ErrNoRows) {
			return Fail(http.StatusNotFound, "member not found") // revoked meanwhile
		}
		if err != nil {
			return fmt.Errorf("update member: %w", err)
		}
		// The audit event names the fields changed (and a new role, a privilege), not the
		// profile values.
		fields := make([]string, 0, len(changes))
		for _, f := range append(slices.Clone(selfEditableFields), "permission") {
			if _, ok := changes[f]; ok {
				fields = append(fields, f)
			}
		}
		ev := map[string]any{"memberId": m.ID, "fields": fields}
		if b.Permission != nil {
			ev["permission"] = *b.Permission
		}
		if err := audit.Append(c.R.Context(), q, []audit.Event{{MeshID: st.mesh.ID, Type: "member_updated", ActorID: st.member,
			Payload: ev}}, time.Now()); err != nil {
			return err
		}
		payload, err := a.sessions.MemberPushPayload(st.mesh.ID, m.ID, "profile_updated", changes)
		if err != nil {
			// Valid changes can exceed a notification (8000 bytes: 32 groups of names JSON
			// escapes six-fold): push the field names, the next hello_ack has the values.
			payload, err = a.sessions.MemberPushPayload(st.mesh.ID, m.ID, "profile_updated",
				map[string]any{"fields": fields, "truncated": true})
			if err != nil {
				return err
			}
		}
		return q.Notify(c.R.Context(), db.NotifyParams{Channel: notifier.Channel, Payload: payload})
	})
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true, "changes": changes, "member": map[string]any{
		"id": updated.ID, "displayName": updated.DisplayName, "roleTag": updated.RoleTag,
		"groups": json.RawMessage(updated.DefaultGroups), "messageMode": updated.MessageMode, "permission": updated.Role,
		"dashboardUserId": updated.DashboardUserID, "joinedAt": audit.FormatTime(updated.JoinedAt),
		"lastSeenAt": formatTimePtr(updated.LastSeenAt)}})
}

// policyAllows reads one field of a selfEditable policy (absent = allowed, the default).
func policyAllows(policy map[string]bool, field string) bool {
	v, ok := policy[field]
	return !ok || v
}

// revokeMember is DELETE /mesh/{meshId}/member/{memberId}: as `broker admin member revoke`.
func (a *API) revokeMember(c *Call) error {
	st, err := a.standingIn(c)
	if err != nil {
		return err
	}
	m, err := a.target(c, st)
	if err != nil {
		return err
	}
	if !st.admin && !st.isSelf(m) {
		return Fail(http.StatusForbidden, "not authorized — only admins or self can revoke")
	}
	if st.protectsOwner(m) {
		return Fail(http.StatusForbidden, "not authorized — only the owner revokes the owner's members")
	}
	res, err := admin.RevokeMember(c.R.Context(), a.pool, st.mesh.ID, m.ID, st.member)
	var ie *admin.InputError
	if errors.As(err, &ie) {
		return Fail(http.StatusNotFound, "member not found") // already revoked
	}
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true, "memberId": res.MemberID, "revoked": true})
}

type settingsBody struct {
	SelfEditable map[string]*bool `json:"selfEditable"`
}

// patchSettings is PATCH /mesh/{meshId}/settings: admins set the selfEditable policy.
func (a *API) patchSettings(c *Call) error {
	var b settingsBody
	if err := a.Decode(c, &b, "invalid JSON", false); err != nil {
		return err
	}
	st, err := a.standingIn(c)
	if err != nil {
		return err
	}
	if !st.admin {
		return Fail(http.StatusForbidden, "admin access required")
	}
	patch := map[string]bool{}
	for k, v := range b.SelfEditable {
		if !slices.Contains(selfEditableFields, k) {
			return Fail(http.StatusBadRequest, "unknown selfEditable field: "+protocol.TruncateUTF8(k, 64))
		}
		if v != nil {
			patch[k] = *v
		}
	}
	if len(patch) == 0 {
		return Fail(http.StatusBadRequest, "no settings to update")
	}
	raw, _ := json.Marshal(patch)
	var policy map[string]bool
	// The merge is one statement (concurrent admins lose nothing) and its audit event
	// commits with it: who may edit what is a privilege.
	err = pgx.BeginFunc(c.R.Context(), a.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		merged, err := q.UpdateSelfEditable(c.R.Context(), db.UpdateSelfEditableParams{Patch: raw, ID: st.mesh.ID})
		if errors.Is(err, pgx.ErrNoRows) {
			return Fail(http.StatusBadRequest, "mesh not found") // archived meanwhile
		}
		if err != nil {
			return fmt.Errorf("update settings: %w", err)
		}
		_ = json.Unmarshal(merged, &policy)
		return audit.Append(c.R.Context(), q, []audit.Event{{MeshID: st.mesh.ID, Type: "settings_changed", ActorID: st.member,
			Payload: map[string]any{"selfEditable": patch}}}, time.Now())
	})
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true, "selfEditable": policy})
}

// kickSession is DELETE /mesh/{meshId}/session/{presenceId}: ends one session, closed 4001
// kicked on whichever instance holds it.
func (a *API) kickSession(c *Call) error {
	st, err := a.standingIn(c)
	if err != nil {
		return err
	}
	presenceID := c.R.PathValue("presenceId")
	if !storable(presenceID) {
		return Fail(http.StatusNotFound, "session not found")
	}
	owner, err := a.q.PresenceMember(c.R.Context(), db.PresenceMemberParams{ID: presenceID, MeshID: st.mesh.ID})
	if errors.Is(err, pgx.ErrNoRows) {
		return Fail(http.StatusNotFound, "session not found")
	}
	if err != nil {
		return fmt.Errorf("look up session: %w", err)
	}
	m, err := a.q.GetMember(c.R.Context(), owner)
	if err != nil {
		return fmt.Errorf("look up member: %w", err)
	}
	if !st.admin && !st.isSelf(m) {
		return Fail(http.StatusForbidden, "not authorized — only admins or self can kick")
	}
	if st.protectsOwner(m) {
		return Fail(http.StatusForbidden, "not authorized — only the owner kicks the owner's sessions")
	}
	found, err := a.sessions.Kick(c.R.Context(), st.mesh.ID, presenceID)
	if err != nil {
		return err
	}
	if !found {
		return Fail(http.StatusNotFound, "session not found")
	}
	return c.OK(map[string]any{"ok": true, "kicked": true})
}
