// Package clitoken mints the CLI's bearer tokens: opaque random strings of which only the
// SHA-256 is stored (cli_sessions.token_hash). Device-code approval, POST /cli/token and
// `broker admin token create` all mint through Mint, so every bearer has the same shape
// and is stored the same way. Stateless; safe for concurrent use.
package clitoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/pglock"
)

// Prefix marks a meshbroker bearer (secret scanners can recognise it).
const Prefix = "cm_"

// New returns a fresh bearer: Prefix and 32 random bytes, base64url without padding
// (46 characters, 256 bits).
func New() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24: it crashes the program instead
	return Prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Hash is the stored form of a bearer: SHA-256, lowercase hex — the same as auth.HashToken's
// for hook tokens (a test checks; clitoken cannot import auth, whose tests import it).
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Params describe the token to mint; every field but UserID is optional ("" = NULL).
type Params struct {
	UserID       string
	DeviceCodeID string
	Hostname     string
	Platform     string
	Arch         string
	Label        string
}

// Minted is a new token: the bearer itself exists only here, to be handed out once.
type Minted struct {
	ID        string
	Token     string
	CreatedAt time.Time
}

// MaxLivePerUser bounds a user's unrevoked tokens: a bearer may mint more for its own user
// (POST /cli/token), and every row is kept.
const MaxLivePerUser = 100

// ErrTooMany: the user already has MaxLivePerUser unrevoked tokens.
var ErrTooMany = errors.New("too many unrevoked tokens for this user")

// Mint inserts a cli_sessions row for a new bearer of p.UserID, unless the user has
// MaxLivePerUser unrevoked tokens (ErrTooMany). q may be bound to the caller's transaction,
// so the token exists only if the transaction commits; in a transaction, concurrent mints
// for one user are serialised, so they cannot all pass the count.
func Mint(ctx context.Context, q *db.Queries, p Params) (Minted, error) {
	if err := pglock.Xact(ctx, q, "user-tokens:"+p.UserID); err != nil {
		return Minted{}, err
	}
	live, err := q.CountLiveCliSessions(ctx, p.UserID)
	if err != nil {
		return Minted{}, fmt.Errorf("count cli sessions: %w", err)
	}
	if live >= MaxLivePerUser {
		return Minted{}, ErrTooMany
	}
	tok := New()
	row, err := q.InsertCliSession(ctx, db.InsertCliSessionParams{
		ID: ids.New(), UserID: p.UserID, DeviceCodeID: opt(p.DeviceCodeID),
		Hostname: opt(p.Hostname), Platform: opt(p.Platform), Arch: opt(p.Arch), Label: opt(p.Label),
		TokenHash: Hash(tok),
	})
	if err != nil {
		return Minted{}, fmt.Errorf("insert cli session: %w", err)
	}
	return Minted{ID: row.ID, Token: tok, CreatedAt: row.CreatedAt}, nil
}

func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
