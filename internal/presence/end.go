package presence

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// Ended is a presence End ended: whom to announce peer_left for.
type Ended struct {
	MeshID, MemberID string
	Name, Pubkey     string // the session's display name and key, else the member's
}

// End ends a presence if epoch still owns it, in one transaction: the presence ended with
// reason, its peer state saved, deliveries addressed to its session rerouted to its member,
// its leases released, its member woken (on notifier.Channel, at commit) and peer_left
// audited. ok is false when there was nothing to end (already ended, or taken over); the
// caller announces peer_left.
func End(ctx context.Context, pool *pgxpool.Pool, presenceID string, epoch int64, reason string) (e Ended, ok bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		ended, err := q.EndPresence(ctx, db.EndPresenceParams{ID: presenceID, Epoch: epoch, Reason: &reason})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // already ended, or taken over
		}
		if err != nil {
			return err
		}
		mem, err := q.GetMember(ctx, ended.MemberID)
		if err != nil {
			return err
		}
		e = Ended{MeshID: ended.MeshID, MemberID: ended.MemberID, Name: mem.DisplayName, Pubkey: mem.PeerPubkey}
		if ended.SessionPubkey != nil {
			e.Pubkey = *ended.SessionPubkey
		}
		if ended.DisplayName != nil {
			e.Name = *ended.DisplayName
		}
		if err := q.SavePeerState(ctx, db.SavePeerStateParams{
			MeshID: ended.MeshID, MemberID: ended.MemberID, Groups: ended.Groups, Profile: ended.Profile,
			Visible: ended.Visible, LastSummary: ended.Summary, LastDisplayName: ended.DisplayName,
		}); err != nil {
			return err
		}
		if _, err := q.ReroutePresenceDeliveries(ctx, &presenceID); err != nil {
			return err
		}
		if _, err := q.ReleaseLeases(ctx, db.ReleaseLeasesParams{PresenceID: &presenceID, MemberID: ended.MemberID}); err != nil {
			return err
		}
		if err := q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: notifier.WakePayloads(nil, []string{ended.MemberID}, nil)[0]}); err != nil {
			return err
		}
		if err := audit.Enqueue(ctx, q, []audit.Event{{MeshID: ended.MeshID, Type: "peer_left", ActorID: ended.MemberID, ActorName: e.Name, Payload: map[string]any{}}}, time.Now()); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return Ended{}, false, err
	}
	return e, ok, nil
}
