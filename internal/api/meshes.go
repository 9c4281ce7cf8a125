package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/pglock"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Bounds on what a mesh request may store.
const (
	maxSlugBytes        = 64
	maxGrantPeers       = 256 // sender entries one grants request may change
	maxGrantCaps        = 16  // capabilities in one entry
	maxGrantCapBytes    = 32
	maxListedMeshes     = 1000
	maxListedMembers    = 5000
	maxDescriptionBytes = 1024
	// maxOwnedMeshes bounds the meshes one user owns (each holds keys, members and an
	// audit chain, kept after archiving): live ones and ones archived in the last day, so
	// creating and deleting in a loop is bounded too.
	maxOwnedMeshes = 100
	// maxGrantEntries bounds the sender entries on one member's grants (they are read on
	// every delivery to it).
	maxGrantEntries = 1024
)

var (
	hex64    = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	slugRule = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
)

type createMeshBody struct {
	Name        string `json:"name"`
	Pubkey      string `json:"pubkey"`
	Slug        string `json:"slug"`
	Template    string `json:"template"`
	Description string `json:"description"`
	UserID      string `json:"user_id"`
}

// createMesh is POST /cli/mesh/create: everything is validated before anything is
// written (the original inserted the mesh and then refused a bad pubkey), and the mesh, its
// owner's member and the audit event commit together.
func (a *API) createMesh(c *Call) error {
	var b createMeshBody
	if err := a.Decode(c, &b, "Invalid body", false); err != nil {
		return err
	}
	p, err := a.Authenticate(c, b.UserID)
	if err != nil {
		return err
	}
	name := strings.TrimSpace(b.Name)
	switch {
	case name == "":
		return Fail(http.StatusBadRequest, "name required")
	case !storable(name):
		return Fail(http.StatusBadRequest, "name contains a NUL character")
	case len(name) > admin.MaxMeshNameBytes:
		return Fail(http.StatusBadRequest, fmt.Sprintf("name longer than %d bytes", admin.MaxMeshNameBytes))
	case !hex64.MatchString(b.Pubkey):
		return Fail(http.StatusBadRequest, "pubkey required (64 hex chars)")
	case len(b.Description) > maxDescriptionBytes || len(b.Template) > maxSlugBytes:
		return Fail(http.StatusBadRequest, "description or template too long")
	}
	slug := admin.Slugify(name)
	if b.Slug != "" {
		if len(b.Slug) > maxSlugBytes || !slugRule.MatchString(b.Slug) {
			return Fail(http.StatusBadRequest, "slug must be lowercase letters, digits and single dashes, at most 64 characters")
		}
		slug = b.Slug
	}
	if len(slug) > maxSlugBytes {
		slug = strings.TrimRight(slug[:maxSlugBytes], "-")
	}
	var mesh db.Mesh
	var member db.Member
	err = pgx.BeginFunc(c.R.Context(), a.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		// Serialised per user, so concurrent creates cannot all pass the count.
		if err := pglock.Xact(c.R.Context(), q, "user-meshes:"+p.UserID); err != nil {
			return err
		}
		owned, err := q.CountOwnedMeshes(c.R.Context(), p.UserID)
		if err != nil {
			return fmt.Errorf("count meshes: %w", err)
		}
		if owned >= maxOwnedMeshes {
			return Fail(http.StatusConflict, fmt.Sprintf("you own %d meshes (counting those deleted in the last day), the most one user may", owned))
		}
		if mesh, err = admin.NewMesh(c.R.Context(), q, name, slug, &p.UserID); err != nil {
			return err
		}
		member, err = q.InsertOwnedMember(c.R.Context(), db.InsertOwnedMemberParams{
			ID: ids.New(), MeshID: mesh.ID, UserID: &p.UserID, PeerPubkey: strings.ToLower(b.Pubkey),
			DisplayName: protocol.TruncateUTF8(name+"-owner", protocol.MaxDisplayNameBytes), Role: "admin",
		})
		if err != nil {
			return fmt.Errorf("insert owner member: %w", err)
		}
		return audit.Append(c.R.Context(), q, []audit.Event{{MeshID: mesh.ID, Type: "member_joined", ActorID: member.ID,
			Payload: map[string]any{"memberId": member.ID, "role": "admin", "via": "mesh_create"}}}, time.Now())
	})
	if errors.Is(err, admin.ErrSlugsTaken) {
		return Fail(http.StatusConflict, "Too many meshes with this name")
	}
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"id": mesh.ID, "slug": mesh.Slug, "name": mesh.Name, "member_id": member.ID})
}

// listMeshes is GET /cli/meshes: active_peers counts live sessions on every instance.
func (a *API) listMeshes(c *Call) error {
	p, err := a.Authenticate(c, c.R.URL.Query().Get("user_id"))
	if err != nil {
		return err
	}
	rows, err := a.q.UserMeshes(c.R.Context(), p.UserID)
	if err != nil {
		return fmt.Errorf("list meshes: %w", err)
	}
	if len(rows) > maxListedMeshes {
		rows = rows[:maxListedMeshes]
	}
	wsURL := a.wsURL(c.R)
	out := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		out = append(out, map[string]any{"id": r.ID, "slug": r.Slug, "name": r.Name, "role": r.Role, "is_owner": r.IsOwner,
			"member_count": r.MemberCount, "active_peers": r.ActivePeers, "joined_at": audit.FormatTime(r.JoinedAt), "broker_url": wsURL})
	}
	return c.OK(map[string]any{"meshes": out})
}

// wsURL is this broker's WebSocket URL as the caller reached it: wss unless the request
// came in plain HTTP without a TLS-terminating proxy in front.
func (a *API) wsURL(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = "ic.claudemesh.com"
	}
	scheme := "ws"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" || a.cfg.TrustProxyHeaders {
		scheme = "wss"
	}
	return scheme + "://" + host + "/ws"
}

// meshForCaller loads a live mesh by slug and the caller's standing in it.
func (a *API) meshForCaller(ctx context.Context, slug, userID string) (db.Mesh, db.CallerMemberRow, error) {
	if !storable(slug) { // no slug holds a NUL; looking it up would fail the statement
		return db.Mesh{}, db.CallerMemberRow{}, Fail(http.StatusNotFound, "Mesh not found")
	}
	mesh, err := a.q.LiveMeshBySlug(ctx, slug)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Mesh{}, db.CallerMemberRow{}, Fail(http.StatusNotFound, "Mesh not found")
	}
	if err != nil {
		return db.Mesh{}, db.CallerMemberRow{}, fmt.Errorf("look up mesh: %w", err)
	}
	caller, err := a.q.CallerMember(ctx, db.CallerMemberParams{MeshID: mesh.ID, UserID: userID})
	if err != nil {
		return db.Mesh{}, db.CallerMemberRow{}, fmt.Errorf("look up caller: %w", err)
	}
	return mesh, caller, nil
}

type grantsBody struct {
	Grants map[string]*[]string `json:"grants"`
	UserID string               `json:"user_id"`
}

// setGrants is POST /cli/mesh/{slug}/grants. Grants live on the recipient's member row and
// routing reads them at delivery time, so a change applies on every instance at once.
func (a *API) setGrants(c *Call) error {
	var b grantsBody
	if err := a.Decode(c, &b, "Invalid body", false); err != nil {
		return err
	}
	p, err := a.Authenticate(c, b.UserID)
	if err != nil {
		return err
	}
	if len(b.Grants) == 0 {
		return Fail(http.StatusBadRequest, "grants required")
	}
	if len(b.Grants) > maxGrantPeers {
		return Fail(http.StatusBadRequest, fmt.Sprintf("at most %d grant entries per request", maxGrantPeers))
	}
	patch := make(map[string]any, len(b.Grants))
	changed := make([]string, 0, len(b.Grants))
	for key, caps := range b.Grants {
		if !hex64.MatchString(key) {
			return Fail(http.StatusBadRequest, "grant keys must be 64 hex chars")
		}
		key = strings.ToLower(key)
		changed = append(changed, key)
		if caps == nil {
			patch[key] = nil
			continue
		}
		set, err := capSet(*caps)
		if err != nil {
			return err
		}
		patch[key] = set
	}
	mesh, caller, err := a.meshForCaller(c.R.Context(), c.R.PathValue("slug"), p.UserID)
	if err != nil {
		return err
	}
	if caller.MemberID == "" {
		return Fail(http.StatusForbidden, "Not a member of this mesh")
	}
	raw, _ := json.Marshal(patch)
	var merged []byte
	err = pgx.BeginFunc(c.R.Context(), a.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		rows, err := q.MergeGrants(c.R.Context(), db.MergeGrantsParams{Patch: raw, MeshID: mesh.ID, UserID: &p.UserID})
		if err != nil {
			return fmt.Errorf("merge grants: %w", err)
		}
		events := make([]audit.Event, 0, len(rows))
		for _, r := range rows {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(r.PeerGrants, &m); err == nil && len(m) > maxGrantEntries {
				return Fail(http.StatusBadRequest, fmt.Sprintf("too many grant entries: at most %d per member", maxGrantEntries))
			}
			if r.ID == caller.MemberID || merged == nil {
				merged = r.PeerGrants
			}
			events = append(events, audit.Event{MeshID: mesh.ID, Type: "grants_changed", ActorID: caller.MemberID,
				Payload: map[string]any{"memberId": r.ID, "peers": changed}})
		}
		return audit.Append(c.R.Context(), q, events, time.Now())
	})
	if err != nil {
		return err
	}
	var grants map[string]any
	_ = json.Unmarshal(merged, &grants)
	return c.OK(map[string]any{"ok": true, "grants": grants})
}

// capSet validates a grant entry and returns it as a set (sorted, no duplicates).
func capSet(caps []string) ([]string, error) {
	if len(caps) > maxGrantCaps {
		return nil, Fail(http.StatusBadRequest, fmt.Sprintf("at most %d capabilities per grant", maxGrantCaps))
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		if c == "" || len(c) > maxGrantCapBytes || !storable(c) { // jsonb cannot hold \u0000
			return nil, Fail(http.StatusBadRequest, fmt.Sprintf("capabilities are 1 to %d bytes", maxGrantCapBytes))
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

type userIDBody struct {
	UserID string `json:"user_id"`
}

// deleteMesh is DELETE /cli/mesh/{slug}: the owner archives the mesh; every instance
// closes its sockets (4002 mesh_deleted) when the archive commits.
func (a *API) deleteMesh(c *Call) error {
	var b userIDBody
	if err := a.Decode(c, &b, "Invalid body", true); err != nil {
		return err
	}
	p, err := a.Authenticate(c, b.UserID)
	if err != nil {
		return err
	}
	mesh, caller, err := a.meshForCaller(c.R.Context(), c.R.PathValue("slug"), p.UserID)
	if err != nil {
		return err
	}
	if !caller.IsOwner {
		return Fail(http.StatusForbidden, "Only the mesh owner can delete it")
	}
	if _, err := admin.ArchiveMesh(c.R.Context(), a.pool, mesh.ID, caller.MemberID); err != nil {
		var ie *admin.InputError
		if errors.As(err, &ie) { // archived by a concurrent request
			return Fail(http.StatusNotFound, "Mesh not found")
		}
		return err
	}
	return c.OK(map[string]any{"ok": true, "deleted": mesh.Slug})
}
