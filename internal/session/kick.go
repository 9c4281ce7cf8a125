package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Changes made over HTTP (package api) reach live sockets through notifications published
// in the transaction that makes them: a kick closes one session, an archived mesh closes
// all of its sessions, and a member-only system push (profile_updated) reaches that
// member's sessions — on whichever instance holds them.

// archivedKey is how an archived mesh is remembered in revokedAt (see register).
func archivedKey(meshID string) string { return "mesh:" + meshID }

// OnKickSession implements notifier.Handler: close the kicked session if it is held here.
func (h *Hub) OnKickSession(presenceID string) {
	h.metrics.NotificationsReceived.WithLabelValues("kick_session").Inc()
	h.mu.Lock()
	s := h.byPresence[presenceID]
	h.mu.Unlock()
	if s != nil {
		s.kicked()
	}
}

// OnMeshArchived implements notifier.Handler: close every session of the mesh held here
// (4002 mesh_deleted), and remember the mesh for a minute for hellos still in flight.
func (h *Hub) OnMeshArchived(meshID string) {
	h.metrics.NotificationsReceived.WithLabelValues("mesh_archived").Inc()
	h.mu.Lock()
	h.revokedAt[archivedKey(meshID)] = time.Now()
	var sessions []*Session
	for s := range h.byMesh[meshID] {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	for _, s := range sessions {
		s.meshDeleted()
	}
}

// MemberPushPayload is the notification that pushes a system event (subtype "system",
// senderPubkey "system") to one member's live sessions on every instance. Publish it with
// the change it announces (db.Queries.Notify on notifier.Channel inside the transaction).
func MemberPushPayload(meshID, memberID, event string, data any) (string, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("encode %s event: %w", event, err)
	}
	ev := systemEvent{MeshID: meshID, OnlyMember: memberID, Push: protocol.Push{
		Type: "push", MessageID: newUUID(), MeshID: meshID, SenderPubkey: "system", Priority: "low",
		CreatedAt: audit.FormatTime(time.Now()), Subtype: "system", Event: event, EventData: raw,
	}}
	b, err := json.Marshal(ev)
	if err != nil {
		return "", fmt.Errorf("encode %s event: %w", event, err)
	}
	payload, ok := notifier.SystemPayload(b)
	if !ok {
		return "", fmt.Errorf("%s event is too large for a notification (%d bytes)", event, len(b))
	}
	return payload, nil
}

// Kick ends one session of a mesh: its presence ends here, at once (peer_left, end reason
// "kicked"), and the instance holding its socket, if any, closes it 4001 kicked when the
// notification arrives — or, had its LISTEN connection been down, when it reconnects and
// finds its kicked presences (closeRevokedMissed). found is false when the mesh has no such
// live or reconnecting presence.
func (h *Hub) Kick(ctx context.Context, meshID, presenceID string) (found bool, err error) {
	p, err := h.q.LivePresence(ctx, db.LivePresenceParams{ID: presenceID, MeshID: meshID})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up session: %w", err)
	}
	if err := h.EndPresence(ctx, presenceID, p.ConnectionEpoch, "kicked"); err != nil {
		return true, fmt.Errorf("end kicked session: %w", err)
	}
	// Also when nothing ended (a reconnect took the presence over meanwhile): the socket
	// now holding it was named in the kick.
	if err := h.q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: notifier.KickSessionPayload(presenceID)}); err != nil {
		return true, fmt.Errorf("publish kick: %w", err)
	}
	return true, nil
}

// closeKickedMissed closes the local sessions whose presence was ended by a kick whose
// notification this instance missed.
func (h *Hub) closeKickedMissed(ctx context.Context) {
	h.mu.Lock()
	held := make([]string, 0, len(h.byPresence))
	for id := range h.byPresence {
		held = append(held, id)
	}
	h.mu.Unlock()
	if len(held) == 0 {
		return
	}
	kicked, err := h.q.KickedAmong(ctx, held)
	if err != nil {
		h.log.Warn("check kicked sessions after reconnecting", "err", err)
		return
	}
	for _, id := range kicked {
		h.OnKickSession(id)
	}
}

// MemberPushPayload is the package function, for callers that hold the hub.
func (h *Hub) MemberPushPayload(meshID, memberID, event string, data any) (string, error) {
	return MemberPushPayload(meshID, memberID, event, data)
}
