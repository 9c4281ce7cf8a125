package api

import (
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

	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// claimRequest is a v2 claim body that passed parseClaimBody.
type claimRequest struct {
	Recipient   [32]byte // x25519 public key the root key is sealed to
	PeerPubkey  string   // the joiner's ed25519 key (lowercase hex): what the member row holds
	DisplayName string   // optional
	// PeerSig (optional) proves PeerPubkey: its signature over ClaimProofMessage. Only a
	// re-claim of a used-up invite needs it.
	PeerSig []byte
	// LinkSig (optional) proves PeerPubkey for linking the member to the bearer's account.
	LinkSig []byte
}

// ClaimProofMessage is what peer_sig signs: the code and the recipient key, so a proof
// cannot be replayed to have the root key sealed to another key.
func ClaimProofMessage(code string, recipient [32]byte) []byte {
	return []byte("meshbroker-claim|" + strings.ToUpper(code) + "|" + hex.EncodeToString(recipient[:]))
}

// parseClaimBody reads a claim body; ok is false for anything malformed. Everything is
// checked here, before any write: a malformed claim consumes nothing (the original consumed
// a use before it found the recipient key undecodable).
func parseClaimBody(raw []byte) (claimRequest, bool) {
	var in struct {
		Recipient   string `json:"recipient_x25519_pubkey"`
		PeerPubkey  string `json:"peer_pubkey"`
		DisplayName string `json:"display_name"`
		PeerSig     string `json:"peer_sig"`
		LinkSig     string `json:"link_sig"`
	}
	if json.Unmarshal(raw, &in) != nil {
		return claimRequest{}, false
	}
	key, err := invite.DecodeKey32(strings.TrimSpace(in.Recipient))
	if err != nil {
		return claimRequest{}, false
	}
	r := claimRequest{Recipient: key, PeerPubkey: strings.ToLower(strings.TrimSpace(in.PeerPubkey)),
		DisplayName: strings.TrimSpace(in.DisplayName)}
	if !invite.IsPubkeyHex(r.PeerPubkey) || len(r.DisplayName) > protocol.MaxDisplayNameBytes || !utf8.ValidString(r.DisplayName) ||
		!storable(r.DisplayName) {
		return claimRequest{}, false
	}
	if in.PeerSig != "" {
		sig, err := hex.DecodeString(in.PeerSig)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return claimRequest{}, false
		}
		r.PeerSig = sig
	}
	if in.LinkSig != "" {
		sig, err := hex.DecodeString(in.LinkSig)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return claimRequest{}, false
		}
		r.LinkSig = sig
	}
	return r, true
}

// mustPub decodes a key parseClaimBody checked (64 hex).
func mustPub(h string) ed25519.PublicKey {
	b, _ := hex.DecodeString(h)
	return ed25519.PublicKey(b)
}

// claimV2Disabled is the original's 501 detail.
const claimV2Disabled = "v2 claim flow is behind BROKER_INVITE_V2_ENABLED=1 until the ed25519 binding step ships"

// inviteClaim is POST /invites/{code}/claim (reference §3.5, with the joiner's ed25519 key in
// peer_pubkey): the short code admits the key as a member and returns the mesh root key
// sealed to the caller's x25519 key.
func inviteClaim(a *API, c *Call) error {
	if err := a.readBody(c); err != nil {
		return err
	}
	req, ok := parseClaimBody(c.Body)
	if !ok {
		return Fail(http.StatusBadRequest, "malformed")
	}
	if !a.cfg.InviteV2Enabled {
		return &Error{Status: http.StatusNotImplemented, Msg: "invite_v2_disabled", Extra: map[string]any{"detail": claimV2Disabled}}
	}
	ctx := c.R.Context()
	// Codes are upper case; people type them.
	code := strings.ToUpper(strings.TrimSpace(c.R.PathValue("code")))
	if len(code) > 64 || !storable(code) { // codes are 8 characters; no lookup for junk
		return Fail(http.StatusNotFound, "not_found")
	}
	inv, err := a.q.InviteByCode(ctx, &code)
	if errors.Is(err, pgx.ErrNoRows) {
		return Fail(http.StatusNotFound, "not_found")
	}
	if err != nil {
		return fmt.Errorf("claim: load invite: %w", err)
	}
	// A repeated claim by the key that last claimed this invite is answered again (the
	// client may have lost the answer), even when that claim used the last use — but then
	// only with proof of that key: otherwise the code and a member's public key would get
	// the root key sealed to anyone's key for as long as the invite lives.
	reclaim := inv.ClaimedByPubkey != nil && *inv.ClaimedByPubkey == req.PeerPubkey && req.PeerSig != nil &&
		ed25519.Verify(mustPub(req.PeerPubkey), ClaimProofMessage(code, req.Recipient), req.PeerSig)
	switch {
	case inv.RevokedAt != nil:
		return Fail(http.StatusGone, "revoked")
	case !inv.ExpiresAt.After(time.Now()):
		return Fail(http.StatusGone, "expired")
	case inv.UsedCount >= inv.MaxUses && !reclaim:
		return Fail(http.StatusGone, "exhausted")
	}
	mesh, err := a.q.LiveMesh(ctx, inv.MeshID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Fail(http.StatusNotFound, "not_found")
	}
	if err != nil {
		return fmt.Errorf("claim: load mesh: %w", err)
	}
	if mesh.OwnerPubkey == nil || mesh.RootKey == nil {
		return Fail(http.StatusBadRequest, "malformed")
	}
	canonical := invite.CanonicalV2(mesh.ID, inv.ID, inv.ExpiresAt, inv.Role, *mesh.OwnerPubkey)
	if inv.Version == 2 && inv.CapabilityV2 != nil {
		capability, err := invite.ParseCapability(*inv.CapabilityV2)
		if err != nil {
			return Fail(http.StatusBadRequest, "malformed")
		}
		if capability.Verify(canonical, *mesh.OwnerPubkey) != nil {
			return Fail(http.StatusBadRequest, "bad_signature")
		}
	}
	// Sealed before anything is written: a root key that cannot be sealed consumes nothing.
	sealed, err := invite.SealRootKey(*mesh.RootKey, req.Recipient)
	if err != nil {
		a.log.Error("claim: seal root key", "mesh", mesh.ID, "err", err)
		return Fail(http.StatusBadRequest, "malformed")
	}
	answer := func(memberID string, already bool) error {
		out := map[string]any{"sealed_root_key": sealed, "mesh_id": mesh.ID, "member_id": memberID,
			"owner_pubkey": *mesh.OwnerPubkey, "canonical_v2": canonical}
		if already {
			out["already_member"] = true
		}
		return c.OK(out)
	}
	// A key that is already a member costs no use (as /join): here the invite still has a
	// use left, or this key made its last claim, so a new claim would have been admitted.
	if id, ok, err := a.inviteLiveMember(ctx, mesh.ID, req.PeerPubkey); err != nil {
		return err
	} else if ok {
		return answer(id, true)
	}
	p := parseInvitePreset(inv.Preset)
	name := p.DisplayName
	if name == "" {
		name = req.DisplayName
	}
	if name == "" {
		name = "member-" + req.PeerPubkey[:8]
	}
	userID, err := a.linkUser(c, mesh.ID, req.PeerPubkey, req.LinkSig)
	if err != nil {
		return err
	}
	memberID, err := a.admitInvited(ctx, inv, req.PeerPubkey, name, p, &req.PeerPubkey, userID)
	switch {
	case errors.Is(err, errInviteUsedUp):
		return Fail(http.StatusGone, "exhausted")
	case errors.Is(err, errInviteAlreadyMember):
		return answer(memberID, true)
	case errors.Is(err, errInviteMeshFull):
		return Fail(http.StatusConflict, "mesh_full")
	case err != nil:
		return err
	}
	return answer(memberID, false)
}
