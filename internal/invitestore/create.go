// Package invitestore creates invites in Postgres: the one creation path shared by
// POST /cli/mesh/:slug/invite and `broker admin invite create`. The formats are package
// invite's; this package adds the mesh's keys, the row and its audit event, in one
// transaction. Safe for concurrent use (it holds no state).
package invitestore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/pglock"
)

// Defaults of an invite, as the original made them.
const (
	DefaultExpiresIn = 7 * 24 * time.Hour
	DefaultMaxUses   = 1
	// MaxMaxUses bounds max_uses (an integer column); an operator wanting more makes another.
	MaxMaxUses = 1_000_000
	// MaxExpiresIn bounds an invite's lifetime.
	MaxExpiresIn = 365 * 24 * time.Hour
)

// ErrTooMany: the mesh already had Params.PerDay invites made in the last day.
var ErrTooMany = errors.New("too many invites for this mesh in the last day")

// codeAttempts is how many codes are drawn before giving up (a collision among 2^40 codes
// is already unlikely; three in a row means something else is wrong).
const codeAttempts = 3

// newCode draws a short code (a variable so a test can make codes collide).
var newCode = invite.NewCode

// Params describe an invite to create.
type Params struct {
	Mesh      db.Mesh       // a live mesh
	Role      string        // admin or member
	MaxUses   int           // ≥ 1; 0 = DefaultMaxUses
	ExpiresIn time.Duration // > 0; 0 = DefaultExpiresIn
	CreatedBy *string       // the user who asked; nil for the operator
	// PerDay, when > 0, caps the invites made for the mesh in the last day (ErrTooMany):
	// every invite is a row and an audit event kept for ever, and admits members.
	PerDay    int
	BrokerURL string // BROKER_URL, written into the token
	AppURL    string // APP_URL, the base of the short link
}

// Created is a stored invite.
type Created struct {
	ID        string
	Token     string
	Code      string
	URL       string // <APP_URL>/i/<code>
	Link      string // ic://join/<token>
	ExpiresAt time.Time
	MaxUses   int
	Role      string
}

// Create stores a new invite for p.Mesh: it fills the mesh's missing signing keypair or
// root key first (meshes created before keys existed, as the original self-healed), signs
// the v1 token and the v2 capability with the owner key, draws a short code (another on a
// collision), inserts the row and appends invite_created to the mesh's audit chain — all in
// one transaction, so an invite never exists without its event.
func Create(ctx context.Context, pool *pgxpool.Pool, p Params) (Created, error) {
	if p.Role != "admin" && p.Role != "member" {
		return Created{}, fmt.Errorf("create invite: role %q is not admin or member", p.Role)
	}
	if p.MaxUses == 0 {
		p.MaxUses = DefaultMaxUses
	}
	if p.ExpiresIn == 0 {
		p.ExpiresIn = DefaultExpiresIn
	}
	if p.MaxUses < 1 || p.MaxUses > MaxMaxUses || p.ExpiresIn < 0 || p.ExpiresIn > MaxExpiresIn {
		return Created{}, fmt.Errorf("create invite: max uses %d or lifetime %s out of bounds", p.MaxUses, p.ExpiresIn)
	}
	var out Created
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		if p.PerDay > 0 {
			// Serialised per mesh, so concurrent creations cannot all pass the count.
			if err := pglock.Xact(ctx, q, "mesh-invites:"+p.Mesh.ID); err != nil {
				return err
			}
			n, err := q.CountRecentInvites(ctx, p.Mesh.ID)
			if err != nil {
				return fmt.Errorf("count invites: %w", err)
			}
			if int(n) >= p.PerDay {
				return ErrTooMany
			}
		}
		mesh, err := healKeys(ctx, q, p.Mesh)
		if err != nil {
			return err
		}
		secret, err := invite.ParseSecretKey(*mesh.OwnerSecretKey)
		if err != nil {
			return fmt.Errorf("mesh %s: %w", mesh.ID, err)
		}
		// Whole seconds: the token and the v2 canonical carry unix seconds, and the row must
		// expire when they say.
		now := time.Now()
		expires := now.Add(p.ExpiresIn).Truncate(time.Second)
		payload := invite.Payload{V: 1, MeshID: mesh.ID, MeshSlug: mesh.Slug, BrokerURL: p.BrokerURL,
			ExpiresAt: expires.Unix(), MeshRootKey: *mesh.RootKey, Role: p.Role, Nonce: invite.NewNonce()}
		payload.Sign(secret)
		id := ids.New()
		token, canonical := payload.Token(), payload.Canonical()
		capability := invite.SignCapability(invite.CanonicalV2(mesh.ID, id, expires, p.Role, payload.OwnerPubkey), secret)
		var row db.Invite
		for attempt := 1; ; attempt++ {
			code := newCode()
			row, err = q.InsertInvite(ctx, db.InsertInviteParams{ID: id, MeshID: mesh.ID, Token: token,
				TokenBytes: &canonical, Code: &code, MaxUses: int32(p.MaxUses), Role: p.Role, ExpiresAt: expires,
				CreatedBy: p.CreatedBy, Version: 2, CapabilityV2: &capability})
			if errors.Is(err, pgx.ErrNoRows) && attempt < codeAttempts {
				continue // the code is taken
			}
			if err != nil {
				return fmt.Errorf("insert invite (attempt %d): %w", attempt, err)
			}
			break
		}
		err = audit.Append(ctx, q, []audit.Event{{MeshID: mesh.ID, Type: "invite_created",
			Payload: map[string]any{"inviteId": row.ID, "role": row.Role, "maxUses": row.MaxUses,
				"expiresAt": audit.FormatTime(row.ExpiresAt)}}}, now)
		if err != nil {
			return err
		}
		out = Created{ID: row.ID, Token: row.Token, Code: *row.Code, ExpiresAt: row.ExpiresAt,
			URL: strings.TrimRight(p.AppURL, "/") + "/i/" + *row.Code, Link: invite.Link(row.Token),
			MaxUses: int(row.MaxUses), Role: row.Role}
		return nil
	})
	if err != nil {
		return Created{}, fmt.Errorf("create invite: %w", err)
	}
	return out, nil
}

// healKeys returns the mesh with its signing keypair and root key, generating whichever is
// missing (the row is only written, and locked, when something is).
func healKeys(ctx context.Context, q *db.Queries, m db.Mesh) (db.Mesh, error) {
	if m.OwnerPubkey != nil && m.OwnerSecretKey != nil && m.RootKey != nil {
		return m, nil
	}
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return db.Mesh{}, fmt.Errorf("generate owner key: %w", err)
	}
	healed, err := q.InviteHealMeshKeys(ctx, db.InviteHealMeshKeysParams{ID: m.ID,
		OwnerPubkey: hex.EncodeToString(pub), OwnerSecretKey: hex.EncodeToString(sec), RootKey: invite.NewRootKey()})
	if err != nil {
		return db.Mesh{}, fmt.Errorf("fill mesh keys: %w", err)
	}
	return healed, nil
}
