package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// PGStore is the Store on the broker's Postgres.
type PGStore struct{ Q *db.Queries }

// Lookup implements Store.
func (s PGStore) Lookup(ctx context.Context, h *protocol.Hello, countPresences bool) (Facts, error) {
	meshID := h.MeshID
	r, err := s.Q.HelloLookup(ctx, db.HelloLookupParams{
		CountPresences: countPresences, MeshID: meshID, Pubkey: h.Pubkey,
		SessionPubkey: h.SessionPubkey, SessionID: h.SessionID,
	})
	if err != nil {
		return Facts{}, fmt.Errorf("hello lookup: %w", err)
	}
	f := Facts{
		LivePresences: r.LivePresences, Found: r.MemberID != "",
		IdentityOwner: r.IdentityOwner, IdentityProven: r.IdentityProven,
		SessionKeyTaken: r.SessionKeyTaken, SessionKeyIsMemberKey: r.SessionKeyIsMemberKey, SessionIDTaken: r.SessionIDTaken,
	}
	if !f.Found {
		return f, nil
	}
	f.Member = Member{
		ID: r.MemberID, MeshID: meshID, Pubkey: r.PeerPubkey, DisplayName: r.DisplayName, Role: r.Role,
		RoleTag: r.RoleTag, DefaultGroups: r.DefaultGroups, MessageMode: r.MessageMode, MeshPolicy: r.SelfEditable,
	}
	if r.SavedVisible != nil {
		f.Member.Saved = &SavedState{
			Groups: r.SavedGroups, Profile: r.SavedProfile, Visible: *r.SavedVisible,
			Summary: r.SavedSummary, LastSeenAt: r.SavedLastSeenAt, Stats: r.SavedStats,
		}
	}
	return f, nil
}

// RememberSignature implements Store.
func (s PGStore) RememberSignature(ctx context.Context, signature, meshID string, expires time.Time) (bool, error) {
	n, err := s.Q.RememberHelloSignature(ctx, db.RememberHelloSignatureParams{Signature: signature, MeshID: meshID, ExpiresAt: expires})
	if err != nil {
		return false, fmt.Errorf("remember hello signature: %w", err)
	}
	return n == 1, nil
}
