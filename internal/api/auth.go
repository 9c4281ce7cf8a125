package api

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/clitoken"
	"github.com/meshbroker/meshbroker/internal/connlimit"
	"github.com/meshbroker/meshbroker/internal/ratelimit"
)

// Principal is an authenticated caller of a bearer route.
type Principal struct {
	UserID    string
	SessionID string // the cli_sessions row of the bearer; "" for the legacy user_id path
	Legacy    bool
}

// bearer returns the token of an Authorization: Bearer header, and whether the header was
// present in that form.
func bearer(r *http.Request) (token string, present bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return "", false
	}
	return strings.TrimSpace(h[7:]), true
}

// Legacy-auth response headers, exactly as the original sent them.
const (
	legacyDeprecation = `version="legacy-body-userid"; sunset="2026-05-15"`
	legacyWarning     = `299 - "body.user_id auth is deprecated; send Authorization: Bearer <session_token>"`
)

// Authenticate resolves the caller of a bearer route (reference §3.2): a bearer token that
// is known and not revoked; else, with BROKER_LEGACY_AUTH=1, the legacyUserID the handler
// read from the body or query (answered with Deprecation and Warning headers and counted);
// else 401 missing_bearer_token.
func (a *API) Authenticate(c *Call, legacyUserID string) (Principal, error) {
	if tok, ok := bearer(c.R); ok {
		if tok == "" {
			return Principal{}, Fail(http.StatusUnauthorized, "empty_bearer_token")
		}
		row, err := a.q.AuthenticateBearer(c.R.Context(), clitoken.Hash(tok))
		if errors.Is(err, pgx.ErrNoRows) {
			return Principal{}, Fail(http.StatusUnauthorized, "invalid_or_revoked_token")
		}
		if err != nil {
			a.log.Error("bearer lookup", "err", err)
			return Principal{}, Fail(http.StatusInternalServerError, "auth_check_failed")
		}
		a.seen.note(row.ID)
		if err := a.takeUserWrite(c, row.UserID); err != nil {
			return Principal{}, err
		}
		return Principal{UserID: row.UserID, SessionID: row.ID}, nil
	}
	if a.cfg.LegacyAuth && legacyUserID != "" {
		exists, err := a.q.UserExists(c.R.Context(), legacyUserID)
		if err != nil {
			a.log.Error("legacy user lookup", "err", err)
			return Principal{}, Fail(http.StatusInternalServerError, "auth_check_failed")
		}
		if !exists {
			// The original accepted any string; an unknown user could only ever see
			// nothing, and refusing it keeps foreign keys from failing later as a 500.
			return Principal{}, Fail(http.StatusUnauthorized, "invalid_or_revoked_token")
		}
		if err := a.takeUserWrite(c, legacyUserID); err != nil {
			return Principal{}, err
		}
		h := c.W.Header()
		h.Set("Deprecation", legacyDeprecation)
		h.Set("Warning", legacyWarning)
		a.metrics.LegacyAuthHits.Inc()
		a.log.Info("legacy auth accepted", "path", c.R.URL.Path)
		return Principal{UserID: legacyUserID, Legacy: true}, nil
	}
	return Principal{}, Fail(http.StatusUnauthorized, "missing_bearer_token")
}

// A user's writes (every route that writes, authenticated as that user) are limited across
// the fleet: each may append audit events or rows kept for ever, and a user's own bearer
// is enough to send them.
const (
	userWriteBurst      = 300
	userWritesPerMinute = 60
)

// takeUserWrite takes one of userID's write tokens when the route writes: a local bucket
// in front of the shared one, so a refused request costs no query. 429 "rate limited"
// (Retry-After: 60) when spent.
func (a *API) takeUserWrite(c *Call, userID string) error {
	if !c.Route.Writes {
		return nil
	}
	ok, err := ratelimit.Limiter{Q: a.q}.AllowBehind(c.R.Context(), a.userWrites.Get(userID), "user-writes:"+userID,
		userWriteBurst, userWritesPerMinute)
	if err != nil {
		return fmt.Errorf("user write budget: %w", err)
	}
	if !ok {
		c.W.Header().Set("Retry-After", "60")
		return Fail(http.StatusTooManyRequests, "rate limited")
	}
	return nil
}

// linkUser is the account a join or claim links its new member to: the bearer's user, when
// the request carries a bearer and peerSig proves the member key for that user and mesh
// (LinkProofMessage) — without the proof, anyone with an invite and a bearer could make a
// member of someone else's public key and then manage it over HTTP. nil without a bearer
// (the claudemesh CLI's join); 401 for a bad bearer; 400 link_proof_required for a bearer
// without a valid proof.
func (a *API) linkUser(c *Call, meshID, peerPubkey string, peerSig []byte) (*string, error) {
	if _, ok := bearer(c.R); !ok {
		return nil, nil
	}
	p, err := a.Authenticate(c, "")
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(peerPubkey)
	if err != nil || len(key) != ed25519.PublicKeySize || len(peerSig) != ed25519.SignatureSize ||
		!ed25519.Verify(key, LinkProofMessage(meshID, p.UserID, strings.ToLower(peerPubkey)), peerSig) {
		return nil, Fail(http.StatusBadRequest, "link_proof_required")
	}
	return &p.UserID, nil
}

// LinkProofMessage is what a joiner signs with its member key (link_sig) to have its new
// member linked to its account.
func LinkProofMessage(meshID, userID, peerPubkey string) []byte {
	return []byte("meshbroker-link|" + meshID + "|" + userID + "|" + peerPubkey)
}

// IsApp reports whether the request carries the trusted web app's secret
// (Authorization: Bearer <BROKER_APP_SECRET>). With no secret configured nobody is the app.
func (a *API) IsApp(r *http.Request) bool {
	tok, ok := bearer(r)
	if !ok || a.cfg.AppSecret == "" || tok == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(a.cfg.AppSecret)) == 1
}

// AuthorizeFor admits the trusted web app, or a bearer of userID (AuthApprover routes): a
// request that acts for a user must come from the app or from that user. Returns 401
// {"error":"unauthorized"} otherwise (403 "forbidden" for a valid bearer of another user).
func (a *API) AuthorizeFor(c *Call, userID string) error {
	if a.IsApp(c.R) {
		return nil
	}
	if _, ok := bearer(c.R); !ok {
		return Fail(http.StatusUnauthorized, "unauthorized")
	}
	p, err := a.Authenticate(c, "")
	if err != nil {
		return err
	}
	if p.UserID != userID {
		return Fail(http.StatusForbidden, "forbidden")
	}
	return nil
}

func (a *API) clientIP(r *http.Request) string { return connlimit.ClientIP(r, a.cfg.TrustProxyHeaders) }

// lastSeen batches last_seen_at bumps of bearer tokens: a request only notes its token, and
// one UPDATE a second writes them all, so authenticating never waits on a write.
type lastSeen struct {
	q   *db.Queries
	log *slog.Logger
	mu  sync.Mutex
	ids map[string]struct{}
}

func newLastSeen(q *db.Queries, log *slog.Logger) *lastSeen {
	return &lastSeen{q: q, log: log, ids: map[string]struct{}{}}
}

// maxPendingSeen bounds the ids held between flushes (more are dropped: it is a hint).
const maxPendingSeen = 100000

func (l *lastSeen) note(id string) {
	l.mu.Lock()
	if len(l.ids) < maxPendingSeen {
		l.ids[id] = struct{}{}
	}
	l.mu.Unlock()
}

func (l *lastSeen) run(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			l.flush()
			return
		case <-t.C:
			l.flush()
		}
	}
}

func (l *lastSeen) flush() {
	l.mu.Lock()
	if len(l.ids) == 0 {
		l.mu.Unlock()
		return
	}
	ids := make([]string, 0, len(l.ids))
	for id := range l.ids {
		ids = append(ids, id)
	}
	l.ids = map[string]struct{}{}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.q.TouchCliSessions(ctx, ids); err != nil {
		l.log.Warn("bump bearer last_seen_at", "tokens", len(ids), "err", err)
	}
}
