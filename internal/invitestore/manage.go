package invitestore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
)

// maxListed bounds a listing of a mesh's invites.
const maxListed = 1000

// Listed is one invite in List: everything but the token (which holds the mesh root key).
type Listed struct {
	ID        string     `json:"inviteId"`
	Code      *string    `json:"code"`
	Role      string     `json:"role"`
	MaxUses   int32      `json:"maxUses"`
	UsedCount int32      `json:"usedCount"`
	ExpiresAt time.Time  `json:"expiresAt"`
	CreatedAt time.Time  `json:"createdAt"`
	RevokedAt *time.Time `json:"revokedAt"`
	CreatedBy *string    `json:"createdBy"`
}

// List returns a mesh's invites, newest first (at most 1000).
func List(ctx context.Context, q *db.Queries, meshID string) ([]Listed, error) {
	rows, err := q.ListInvites(ctx, db.ListInvitesParams{MeshID: meshID, Lim: maxListed})
	if err != nil {
		return nil, fmt.Errorf("list invites: %w", err)
	}
	out := make([]Listed, 0, len(rows))
	for _, r := range rows {
		l := Listed{ID: r.ID, Code: r.Code, Role: r.Role, MaxUses: r.MaxUses, UsedCount: r.UsedCount,
			ExpiresAt: r.ExpiresAt.UTC(), CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy}
		if r.RevokedAt != nil {
			t := r.RevokedAt.UTC()
			l.RevokedAt = &t
		}
		out = append(out, l)
	}
	return out, nil
}

// ErrNoInvite: the mesh has no unrevoked invite with that id or code.
var ErrNoInvite = errors.New("no unrevoked invite with that id or code")

// Revoke revokes an invite of a mesh, by id or code, with its invite_revoked audit event in
// the same transaction. Members it admitted stay (revoke them one by one). actorID is the
// member acting ("" for the operator).
func Revoke(ctx context.Context, conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, meshID, ref, actorID string) (id string, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		q := db.New(tx)
		row, err := q.RevokeInvite(ctx, db.RevokeInviteParams{MeshID: meshID, Ref: ref})
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoInvite
		}
		if err != nil {
			return fmt.Errorf("revoke invite: %w", err)
		}
		id = row.ID
		return audit.Append(ctx, q, []audit.Event{{MeshID: meshID, Type: "invite_revoked", ActorID: actorID,
			Payload: map[string]any{"inviteId": row.ID}}}, time.Now())
	})
	return id, err
}
