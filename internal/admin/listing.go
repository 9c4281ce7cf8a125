package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
)

// maxListed bounds an operator listing.
const maxListed = 1000

// MeshListing is one mesh in ListMeshes.
type MeshListing struct {
	MeshID      string     `json:"meshId"`
	Name        string     `json:"name"`
	Slug        string     `json:"slug"`
	OwnerUserID *string    `json:"ownerUserId"`
	CreatedAt   time.Time  `json:"createdAt"`
	ArchivedAt  *time.Time `json:"archivedAt"`
	MemberCount int64      `json:"memberCount"`
	ActivePeers int64      `json:"activePeers"`
}

// ListMeshes lists meshes, newest first (live ones, or all with archived).
func ListMeshes(ctx context.Context, q *db.Queries, archived bool) (map[string][]MeshListing, error) {
	rows, err := q.ListMeshes(ctx, db.ListMeshesParams{IncludeArchived: archived, Lim: maxListed})
	if err != nil {
		return nil, fmt.Errorf("list meshes: %w", err)
	}
	out := make([]MeshListing, 0, len(rows))
	for _, r := range rows {
		out = append(out, MeshListing{MeshID: r.ID, Name: r.Name, Slug: r.Slug, OwnerUserID: r.OwnerUserID,
			CreatedAt: r.CreatedAt.UTC(), ArchivedAt: utcPtr(r.ArchivedAt), MemberCount: r.MemberCount, ActivePeers: r.ActivePeers})
	}
	return map[string][]MeshListing{"meshes": out}, nil
}

// MemberListing is one member in ListMembers.
type MemberListing struct {
	MemberID    string     `json:"memberId"`
	DisplayName string     `json:"displayName"`
	Pubkey      string     `json:"pubkey"`
	Role        string     `json:"role"`
	UserID      *string    `json:"userId"`
	JoinedAt    time.Time  `json:"joinedAt"`
	RevokedAt   *time.Time `json:"revokedAt"`
	Sessions    int64      `json:"sessions"`
}

// ListMembers lists a mesh's members, oldest first, revoked ones included.
func ListMembers(ctx context.Context, q *db.Queries, meshID string) (map[string][]MemberListing, error) {
	if _, err := q.GetMesh(ctx, meshID); errors.Is(err, pgx.ErrNoRows) {
		return nil, inputErr("no mesh with id %q", meshID)
	} else if err != nil {
		return nil, fmt.Errorf("look up mesh: %w", err)
	}
	rows, err := q.MeshMembers(ctx, db.MeshMembersParams{MeshID: meshID, Lim: maxListed})
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	out := make([]MemberListing, 0, len(rows))
	for _, r := range rows {
		out = append(out, MemberListing{MemberID: r.ID, DisplayName: r.DisplayName, Pubkey: r.PeerPubkey, Role: r.Role,
			UserID: r.UserID, JoinedAt: r.JoinedAt.UTC(), RevokedAt: utcPtr(r.RevokedAt), Sessions: r.SessionCount})
	}
	return map[string][]MemberListing{"members": out}, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
