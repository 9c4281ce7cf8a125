package api

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

var syncPubkey = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// syncMeshJSON is one joined mesh in the /cli-sync answer.
type syncMeshJSON struct {
	MeshID    string `json:"mesh_id"`
	Slug      string `json:"slug"`
	BrokerURL string `json:"broker_url"`
	MemberID  string `json:"member_id"`
	Role      string `json:"role"`
}

func syncInvalid(reason string) error {
	return Fail(http.StatusBadRequest, "sync token invalid: "+reason)
}

// SyncProofMessage is what a /cli-sync peer_sig signs: the token's jti, which is single use,
// so a proof cannot be replayed.
func SyncProofMessage(jti string) []byte { return []byte("meshbroker-sync|" + jti) }

// cliSync: POST /cli-sync. The web app signs the list of a user's meshes into a single-use
// token; the CLI presents it with one ed25519 key, which becomes (or is linked as) the
// user's member in each listed live mesh. The jti is consumed in the transaction that writes
// the members, so a request refused for any reason does not burn the token, and a token
// cannot be used twice on any instance. action "create" (a new mesh in the token) is not
// supported: meshes are created with POST /cli/mesh/create.
func (a *API) cliSync(c *Call) error {
	const required = "sync_token, peer_pubkey, display_name required"
	var b struct {
		SyncToken   string `json:"sync_token"`
		PeerPubkey  string `json:"peer_pubkey"`
		DisplayName string `json:"display_name"`
		PeerSig     string `json:"peer_sig"` // optional: proves peer_pubkey (SyncProofMessage)
	}
	if err := a.Decode(c, &b, required, true); err != nil {
		return err
	}
	b.DisplayName = strings.TrimSpace(b.DisplayName)
	if b.SyncToken == "" || b.PeerPubkey == "" || b.DisplayName == "" {
		return Fail(http.StatusBadRequest, required)
	}
	if !syncPubkey.MatchString(b.PeerPubkey) {
		return Fail(http.StatusBadRequest, "peer_pubkey must be 64 hex chars (32 bytes)")
	}
	if err := tooLong("display_name", b.DisplayName, maxNameField); err != nil {
		return err
	}
	claims, reason := parseSyncJWT(b.SyncToken, a.cfg.CLISyncSecret, time.Now())
	if reason != "" {
		return syncInvalid(reason)
	}
	pubkey := strings.ToLower(b.PeerPubkey)
	// The token names the account, not the key: anyone may present any public key. Without
	// proof of the key, an existing member that belongs to no account is left alone.
	proven := false
	if b.PeerSig != "" {
		sig, err := hex.DecodeString(b.PeerSig)
		if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(mustPub(pubkey), SyncProofMessage(claims.Jti), sig) {
			return Fail(http.StatusBadRequest, "peer_sig does not verify")
		}
		proven = true
	}
	var out []syncMeshJSON
	err := a.loginTx(c.R.Context(), func(q *db.Queries) error {
		ctx := c.R.Context()
		n, err := q.ConsumeSyncJti(ctx, db.ConsumeSyncJtiParams{Jti: claims.Jti, ExpiresAt: claims.Exp})
		if err != nil {
			return fmt.Errorf("consume sync jti: %w", err)
		}
		if n == 0 {
			return syncInvalid("token already used")
		}
		if reason := claims.validate(); reason != "" {
			return syncInvalid(reason)
		}
		if err := q.UpsertUser(ctx, db.UpsertUserParams{ID: claims.Sub, Email: claims.Email}); err != nil {
			if loginUniqueViolation(err, "users_email_key") {
				return Fail(http.StatusConflict, "email belongs to another user")
			}
			return fmt.Errorf("upsert user: %w", err)
		}
		meshIDs := make([]string, len(claims.Meshes))
		for i, m := range claims.Meshes {
			meshIDs[i] = m.ID
		}
		live, err := q.SyncMeshes(ctx, meshIDs)
		if err != nil {
			return fmt.Errorf("sync meshes: %w", err)
		}
		slugs := make(map[string]string, len(live))
		for _, m := range live {
			slugs[m.ID] = m.Slug
		}
		var events []audit.Event
		for _, m := range claims.Meshes { // in the token's order
			slug, ok := slugs[m.ID]
			if !ok {
				continue
			}
			row, err := q.SyncMember(ctx, db.SyncMemberParams{ID: ids.New(), MeshID: m.ID, UserID: &claims.Sub,
				PeerPubkey: pubkey, DisplayName: b.DisplayName, Role: m.Role, Proven: proven})
			if loginNoRows(err) {
				continue // the key is another account's member there, or no account's and unproven
			}
			if err != nil {
				return fmt.Errorf("sync member: %w", err)
			}
			if row.Inserted {
				events = append(events, audit.Event{MeshID: m.ID, Type: "member_joined", ActorID: row.ID, ActorName: b.DisplayName,
					Payload: map[string]any{"memberId": row.ID, "role": row.Role, "via": "cli-sync"}})
			} else {
				// An existing member was (re)named: its live sessions, on every instance, are
				// told as a PATCH would tell them.
				payload, err := a.sessions.MemberPushPayload(m.ID, row.ID, "profile_updated", map[string]any{"displayName": b.DisplayName})
				if err != nil {
					return err
				}
				if err := q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: payload}); err != nil {
					return fmt.Errorf("publish profile_updated: %w", err)
				}
			}
			out = append(out, syncMeshJSON{MeshID: m.ID, Slug: slug, BrokerURL: a.cfg.BrokerURL, MemberID: row.ID, Role: row.Role})
		}
		if len(out) == 0 {
			return Fail(http.StatusBadRequest, "no valid meshes found in sync token")
		}
		if err := audit.Append(ctx, q, events, time.Now()); err != nil {
			return fmt.Errorf("audit member_joined: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"ok": true, "account_id": claims.Sub, "meshes": out})
}
