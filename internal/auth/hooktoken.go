package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
)

// Hook tokens are the Bearer credential of POST /hook/set-status: a member obtains its token
// on its authenticated socket, puts it in a Claude Code hook's headers, and a hook carrying
// it acts only on that member's presences (PROTOCOL.md §6).
//
// Only the token's SHA-256 is stored. A member asking again gets the same token, which the
// broker does not keep: the token is derived, HMAC-SHA256(deployment secret, "hook-token" |
// member id | generation), with the secret generated once and shared by every instance
// through Postgres (broker_secrets). Rotating bumps the generation; the old token's hash
// then matches nothing. A revoked member's token is refused (the lookup joins the member).

// HookTokenPrefix starts every hook token, so a leaked one is recognisable in a scan.
const HookTokenPrefix = "mbh_"

// hookSecretName names the HMAC key in broker_secrets.
const hookSecretName = "hook_token_hmac"

// DeriveHookToken is the token of a member's generation under secret.
func DeriveHookToken(secret []byte, memberID string, generation int32) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("hook-token|" + memberID + "|" + strconv.FormatInt(int64(generation), 10)))
	return HookTokenPrefix + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// HashToken is what is stored of a token: hex SHA-256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// BearerToken extracts the token of an "Authorization: Bearer <token>" header value; "" when
// there is none.
func BearerToken(header string) string {
	const p = "bearer "
	if len(header) > len(p) && strings.EqualFold(header[:len(p)], p) {
		return strings.TrimSpace(header[len(p):])
	}
	return ""
}

// HookSecret loads (creating it on first use) the deployment's hook-token key, once per
// process.
type HookSecret struct {
	mu     sync.Mutex
	secret []byte // guarded by mu
}

// Get returns the key.
func (c *HookSecret) Get(ctx context.Context, q *db.Queries) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.secret != nil {
		return c.secret, nil
	}
	candidate := make([]byte, 32)
	if _, err := rand.Read(candidate); err != nil {
		return nil, fmt.Errorf("hook secret: %w", err)
	}
	for range 2 { // a concurrent first insert can hide the row from one statement
		rows, err := q.EnsureBrokerSecret(ctx, db.EnsureBrokerSecretParams{Name: hookSecretName, Candidate: candidate})
		if err != nil {
			return nil, fmt.Errorf("hook secret: %w", err)
		}
		if len(rows) > 0 {
			c.secret = rows[0]
			return c.secret, nil
		}
	}
	return nil, errors.New("hook secret: not found after creating it")
}

// IssueHookToken returns the member's hook token: created on its first request, the same
// one after, a new one (the old one void) when rotate is set.
func IssueHookToken(ctx context.Context, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, secrets *HookSecret, memberID string, rotate bool) (string, error) {
	var token string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		secret, err := secrets.Get(ctx, q)
		if err != nil {
			return err
		}
		gen, err := q.LockHookToken(ctx, memberID)
		if errors.Is(err, pgx.ErrNoRows) {
			token = DeriveHookToken(secret, memberID, 1)
			n, err := q.InsertHookToken(ctx, db.InsertHookTokenParams{MemberID: memberID, TokenHash: HashToken(token)})
			if err != nil {
				return fmt.Errorf("insert hook token: %w", err)
			}
			if n == 1 && !rotate {
				return nil
			}
			if gen, err = q.LockHookToken(ctx, memberID); err != nil { // created concurrently
				return fmt.Errorf("read hook token: %w", err)
			}
		} else if err != nil {
			return fmt.Errorf("read hook token: %w", err)
		}
		if !rotate {
			token = DeriveHookToken(secret, memberID, gen)
			return nil
		}
		token = DeriveHookToken(secret, memberID, gen+1)
		if err := q.RotateHookToken(ctx, db.RotateHookTokenParams{MemberID: memberID, TokenHash: HashToken(token), Generation: gen + 1}); err != nil {
			return fmt.Errorf("rotate hook token: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return token, nil
}
