package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
)

// PGStore is the Store on the broker's Postgres.
type PGStore struct{ Q *db.Queries }

// LivePresences implements Store.
func (s PGStore) LivePresences(ctx context.Context, meshID, excludeIdentity string) (int64, error) {
	n, err := s.Q.CountLivePresences(ctx, db.CountLivePresencesParams{MeshID: meshID, ExcludeIdentity: excludeIdentity})
	if err != nil {
		return 0, fmt.Errorf("count live presences: %w", err)
	}
	return n, nil
}

// Member implements Store.
func (s PGStore) Member(ctx context.Context, meshID, pubkey string) (Member, bool, error) {
	r, err := s.Q.GetLiveMemberByPubkey(ctx, db.GetLiveMemberByPubkeyParams{MeshID: meshID, Pubkey: pubkey})
	if errors.Is(err, pgx.ErrNoRows) {
		return Member{}, false, nil
	}
	if err != nil {
		return Member{}, false, fmt.Errorf("look up member: %w", err)
	}
	return Member{ID: r.ID, MeshID: r.MeshID, Pubkey: r.PeerPubkey, DisplayName: r.DisplayName, Role: r.Role}, true, nil
}

// RememberSignature implements Store.
func (s PGStore) RememberSignature(ctx context.Context, signature, meshID string, expires time.Time) (bool, error) {
	n, err := s.Q.RememberHelloSignature(ctx, db.RememberHelloSignatureParams{Signature: signature, MeshID: meshID, ExpiresAt: expires})
	if err != nil {
		return false, fmt.Errorf("remember hello signature: %w", err)
	}
	return n == 1, nil
}
