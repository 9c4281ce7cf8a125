package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/clitoken"
)

// createToken: POST /cli/token. Mints a bearer for body.user_id; the caller is the web app
// (which vouches for the user) or already holds a bearer of that user.
func (a *API) createToken(c *Call) error {
	b, isApp, err := a.decodeApprover(c)
	if err != nil {
		return err
	}
	host, platform, arch := strings.TrimSpace(b.Hostname), strings.TrimSpace(b.Platform), strings.TrimSpace(b.Arch)
	if host == "" {
		host = "paste-token"
	}
	if platform == "" {
		platform = "unknown"
	}
	if arch == "" {
		arch = "unknown"
	}
	var token string
	err = a.loginTx(c.R.Context(), func(q *db.Queries) error {
		if err := vouch(c.R.Context(), q, b, isApp); err != nil {
			return err
		}
		m, err := clitoken.Mint(c.R.Context(), q, clitoken.Params{UserID: b.UserID, Hostname: host, Platform: platform, Arch: arch})
		token = m.Token
		return tooManyTokens(err)
	})
	if err != nil {
		return err
	}
	return c.OK(map[string]any{"token": token})
}

// sessionJSON is one token in GET /cli/sessions.
type sessionJSON struct {
	ID         string  `json:"id"`
	Hostname   *string `json:"hostname"`
	Platform   *string `json:"platform"`
	Arch       *string `json:"arch"`
	Label      *string `json:"label"`
	LastSeenAt string  `json:"last_seen_at"`
	CreatedAt  string  `json:"created_at"`
}

// listSessions: GET /cli/sessions — the caller's own unrevoked tokens, oldest first (with
// BROKER_LEGACY_AUTH=1 the user_id query parameter names the caller).
func (a *API) listSessions(c *Call) error {
	legacyID := c.R.URL.Query().Get("user_id")
	if !storable(legacyID) {
		legacyID = "" // no such user; text cannot hold NUL
	}
	p, err := a.Authenticate(c, legacyID)
	if err != nil {
		return err
	}
	rows, err := a.q.ListLiveCliSessions(c.R.Context(), p.UserID)
	if err != nil {
		return fmt.Errorf("list cli sessions: %w", err)
	}
	out := make([]sessionJSON, 0, len(rows))
	for _, r := range rows {
		out = append(out, sessionJSON{ID: r.ID, Hostname: r.Hostname, Platform: r.Platform, Arch: r.Arch, Label: r.Label,
			LastSeenAt: audit.FormatTime(r.LastSeenAt), CreatedAt: audit.FormatTime(r.CreatedAt)})
	}
	return c.OK(map[string]any{"sessions": out})
}

// revokeSession: POST /cli/session/revoke. {token}: the bearer itself is the right to revoke
// it. {session_id} with Authorization: Bearer: one of the caller's own tokens (another
// user's id reads as not found).
func (a *API) revokeSession(c *Call) error {
	var b struct {
		Token     string `json:"token"`
		SessionID string `json:"session_id"`
	}
	if err := a.Decode(c, &b, "Invalid body", true); err != nil {
		return err
	}
	ctx := c.R.Context()
	var err error
	switch {
	case b.Token != "":
		_, err = a.q.RevokeCliSessionByHash(ctx, clitoken.Hash(b.Token))
	case b.SessionID != "":
		p, aerr := a.Authenticate(c, "")
		if aerr != nil {
			return aerr
		}
		if p.Legacy {
			return Fail(http.StatusUnauthorized, "missing_bearer_token")
		}
		if !storable(b.SessionID) {
			return c.OK(map[string]any{"ok": true, "found": false})
		}
		_, err = a.q.RevokeUserCliSession(ctx, db.RevokeUserCliSessionParams{ID: b.SessionID, UserID: p.UserID})
	default:
		return Fail(http.StatusBadRequest, "token required")
	}
	if loginNoRows(err) {
		return c.OK(map[string]any{"ok": true, "found": false})
	}
	if err != nil {
		return fmt.Errorf("revoke cli session: %w", err)
	}
	return c.OK(map[string]any{"ok": true, "found": true})
}

// tooManyTokens answers clitoken.ErrTooMany as a 409 (the user must revoke one first) and
// returns any other error as is.
func tooManyTokens(err error) error {
	if errors.Is(err, clitoken.ErrTooMany) {
		return Fail(http.StatusConflict, fmt.Sprintf("too many tokens: a user may hold %d, revoke one first", clitoken.MaxLivePerUser))
	}
	return err
}
