package api

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/pglock"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// The /join error strings, the original's (reference §3.3), plus our bounds.
const (
	joinInvalidJSON   = "invalid JSON"
	joinRequired      = "invite_token, invite_payload, peer_pubkey, display_name required"
	joinBadPubkey     = "peer_pubkey must be 64 hex chars (32 bytes)"
	joinLongName      = "display_name must be at most 128 bytes"
	joinBadSignature  = "invite_bad_signature"
	joinMeshNotFound  = "mesh_not_found"
	joinMissingOwner  = "mesh_missing_owner_key"
	joinOwnerMismatch = "invite_owner_mismatch"
	joinNotFound      = "invite_not_found"
	joinMeshMismatch  = "invite_mesh_mismatch"
	joinRevoked       = "invite_revoked"
	joinExpired       = "invite_expired"
	joinExhausted     = "invite_exhausted"
	joinInsertFailed  = "member_insert_failed"
	joinMeshFull      = "mesh_full" // ours: the mesh has maxMeshMembers unrevoked members
	joinBadLinkSig    = "link_sig must be 128 hex chars"
)

// joinRequest is a /join body that passed parseJoinBody.
type joinRequest struct {
	Token       string
	Payload     invite.Payload
	PeerPubkey  string // lowercase hex
	DisplayName string // trimmed, at most protocol.MaxDisplayNameBytes
	LinkSig     []byte // optional: the member key's signature of LinkProofMessage
}

// parseJoinBody reads a /join body. Its error is the answer's message (always a 400): a
// body that is not a JSON object is "invalid JSON"; a field that is absent, empty or not of
// its type counts as missing; a payload object whose fields do not have their types cannot
// carry a valid signature.
func parseJoinBody(raw []byte) (joinRequest, string) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return joinRequest{}, joinInvalidJSON
	}
	var r joinRequest
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(m[k], &s) // absent or not a string: ""
		return s
	}
	r.Token = invite.TokenFromLink(str("invite_token"))
	r.PeerPubkey = strings.TrimSpace(str("peer_pubkey"))
	r.DisplayName = strings.TrimSpace(str("display_name"))
	payload := m["invite_payload"]
	isObject := len(payload) > 0 && payload[0] == '{'
	if r.Token == "" || !isObject || r.PeerPubkey == "" || r.DisplayName == "" {
		return joinRequest{}, joinRequired
	}
	if !invite.IsPubkeyHex(r.PeerPubkey) {
		return joinRequest{}, joinBadPubkey
	}
	r.PeerPubkey = strings.ToLower(r.PeerPubkey)
	if len(r.DisplayName) > protocol.MaxDisplayNameBytes || !utf8.ValidString(r.DisplayName) {
		return joinRequest{}, joinLongName
	}
	if err := json.Unmarshal(payload, &r.Payload); err != nil {
		return joinRequest{}, joinBadSignature
	}
	if sig := str("link_sig"); sig != "" {
		b, err := hex.DecodeString(sig)
		if err != nil || len(b) != ed25519.SignatureSize {
			return joinRequest{}, joinBadLinkSig
		}
		r.LinkSig = b
	}
	return r, ""
}

// inviteJoin is POST /join (reference §3.4): a v1 invite token and its signed payload make the
// caller's key a member of the mesh, using one of the invite's uses.
func inviteJoin(a *API, c *Call) error {
	if err := a.readBody(c); err != nil {
		return err
	}
	req, msg := parseJoinBody(c.Body)
	if msg != "" {
		return Fail(http.StatusBadRequest, msg)
	}
	ctx := c.R.Context()
	userID, err := a.linkUser(c, req.Payload.MeshID, req.PeerPubkey, req.LinkSig)
	if err != nil {
		return err
	}
	if err := req.Payload.Verify(); err != nil {
		return Fail(http.StatusBadRequest, joinBadSignature)
	}
	mesh, err := a.q.LiveMesh(ctx, req.Payload.MeshID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Fail(http.StatusBadRequest, joinMeshNotFound)
	}
	if err != nil {
		return fmt.Errorf("join: load mesh: %w", err)
	}
	if mesh.OwnerPubkey == nil {
		return Fail(http.StatusBadRequest, joinMissingOwner)
	}
	// The signature verified against the payload's key: it counts only if that is the mesh's.
	if !strings.EqualFold(*mesh.OwnerPubkey, req.Payload.OwnerPubkey) {
		return Fail(http.StatusBadRequest, joinOwnerMismatch)
	}
	inv, err := a.q.InviteByToken(ctx, strings.TrimRight(req.Token, "="))
	if errors.Is(err, pgx.ErrNoRows) {
		return Fail(http.StatusBadRequest, joinNotFound)
	}
	if err != nil {
		return fmt.Errorf("join: load invite: %w", err)
	}
	switch {
	case inv.MeshID != mesh.ID:
		return Fail(http.StatusBadRequest, joinMeshMismatch)
	case inv.RevokedAt != nil:
		return Fail(http.StatusBadRequest, joinRevoked)
	case !inv.ExpiresAt.After(time.Now()):
		return Fail(http.StatusBadRequest, joinExpired)
	}
	// Joining twice with the same key is not an error and costs no use.
	if id, ok, err := a.inviteLiveMember(ctx, mesh.ID, req.PeerPubkey); err != nil {
		return err
	} else if ok {
		return c.OK(map[string]any{"ok": true, "memberId": id, "alreadyMember": true})
	}
	p := parseInvitePreset(inv.Preset)
	name := req.DisplayName
	if p.DisplayName != "" {
		name = p.DisplayName
	}
	memberID, err := a.admitInvited(ctx, inv, req.PeerPubkey, name, p, nil, userID)
	switch {
	case errors.Is(err, errInviteUsedUp):
		return Fail(http.StatusBadRequest, joinExhausted)
	case errors.Is(err, errInviteAlreadyMember):
		return c.OK(map[string]any{"ok": true, "memberId": memberID, "alreadyMember": true})
	case errors.Is(err, errInviteMeshFull):
		return Fail(http.StatusBadRequest, joinMeshFull)
	case errors.Is(err, errInviteInsertMember):
		a.log.Error("join: insert member", "mesh", mesh.ID, "err", err)
		return Fail(http.StatusBadRequest, joinInsertFailed)
	case err != nil:
		return err
	}
	return c.OK(map[string]any{"ok": true, "memberId": memberID})
}

// inviteLiveMember returns the unrevoked member with this key in the mesh, if any.
func (a *API) inviteLiveMember(ctx context.Context, meshID, pubkey string) (string, bool, error) {
	m, err := a.q.InviteLiveMember(ctx, db.InviteLiveMemberParams{MeshID: meshID, PeerPubkey: pubkey})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up member: %w", err)
	}
	return m.ID, true, nil
}

var (
	errInviteUsedUp        = errors.New("invite has no use left")
	errInviteAlreadyMember = errors.New("key is already a member")
	errInviteInsertMember  = errors.New("insert member")
	errInviteMeshFull      = errors.New("mesh has the most members it may")
)

// maxMeshMembers bounds a mesh's unrevoked members (each is a row read by listings, hellos
// and routing; the member listings show this many).
const maxMeshMembers = maxListedMembers

// admitInvited consumes one use of inv and inserts the member, with its member_joined audit event,
// in one transaction: a member exists exactly when its use was counted. It returns
// errInviteUsedUp when the invite has no use left (or was revoked or expired meanwhile), and
// errInviteAlreadyMember with the member's id when a concurrent request with the same key won
// (its use is given back by the rollback). claimedBy is recorded on the invite (v2 claims).
func (a *API) admitInvited(ctx context.Context, inv db.Invite, pubkey, name string, p invitePreset, claimedBy, userID *string) (string, error) {
	memberID := ids.New()
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		// Serialised per mesh, so concurrent joins cannot all pass the count.
		if err := pglock.Xact(ctx, q, "mesh-members:"+inv.MeshID); err != nil {
			return err
		}
		live, err := q.CountLiveMembers(ctx, db.CountLiveMembersParams{MeshID: inv.MeshID, Cap: maxMeshMembers})
		if err != nil {
			return fmt.Errorf("count members: %w", err)
		}
		if live >= maxMeshMembers {
			return errInviteMeshFull
		}
		_, err = q.UseInvite(ctx, db.UseInviteParams{ID: inv.ID, ClaimedBy: claimedBy})
		if errors.Is(err, pgx.ErrNoRows) {
			return errInviteUsedUp
		}
		if err != nil {
			return fmt.Errorf("use invite: %w", err)
		}
		_, err = q.InsertInvitedMember(ctx, db.InsertInvitedMemberParams{ID: memberID, MeshID: inv.MeshID,
			PeerPubkey: pubkey, DisplayName: name, Role: inv.Role, RoleTag: p.RoleTag,
			DefaultGroups: p.Groups, MessageMode: p.MessageMode, UserID: userID})
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "members_mesh_pubkey_live_key" {
			return errInviteAlreadyMember
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errInviteInsertMember, err)
		}
		return audit.Append(ctx, q, []audit.Event{{MeshID: inv.MeshID, Type: "member_joined",
			ActorID: memberID, ActorName: name,
			Payload: map[string]any{"memberId": memberID, "role": inv.Role, "via": "invite", "inviteId": inv.ID}}}, time.Now())
	})
	if errors.Is(err, errInviteUsedUp) || errors.Is(err, errInviteAlreadyMember) {
		// A request with the same key may have committed first (the CAS waited for it, then
		// found the use gone, or the member index refused the second row).
		id, ok, lerr := a.inviteLiveMember(ctx, inv.MeshID, pubkey)
		if lerr != nil {
			return "", lerr
		}
		if ok {
			return id, errInviteAlreadyMember
		}
		return "", errInviteUsedUp
	}
	if err != nil {
		return "", fmt.Errorf("admitInvited member: %w", err)
	}
	return memberID, nil
}

// invitePreset is what an invite sets on the members it admits (invites.preset), with the
// original's defaults; values of the wrong type are ignored.
type invitePreset struct {
	DisplayName string
	RoleTag     *string
	Groups      []byte // a JSON array
	MessageMode string
}

func parseInvitePreset(raw []byte) invitePreset {
	var in struct {
		DisplayName any             `json:"displayName"`
		RoleTag     any             `json:"roleTag"`
		Groups      json.RawMessage `json:"groups"`
		MessageMode any             `json:"messageMode"`
	}
	_ = json.Unmarshal(raw, &in) // the broker wrote it; anything unreadable is no preset
	p := invitePreset{Groups: []byte("[]"), MessageMode: "push"}
	if s, ok := in.DisplayName.(string); ok {
		p.DisplayName = protocol.TruncateUTF8(strings.TrimSpace(s), protocol.MaxDisplayNameBytes)
	}
	if s, ok := in.RoleTag.(string); ok {
		p.RoleTag = &s
	}
	var groups []any
	if len(in.Groups) > 0 && json.Unmarshal(in.Groups, &groups) == nil && groups != nil {
		p.Groups = in.Groups
	}
	if s, ok := in.MessageMode.(string); ok && (s == "push" || s == "inbox" || s == "off") {
		p.MessageMode = s
	}
	return p
}
