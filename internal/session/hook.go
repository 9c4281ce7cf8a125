package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/connlimit"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/presence"
	"github.com/meshbroker/meshbroker/internal/protocol"
	"github.com/meshbroker/meshbroker/internal/ratelimit"
)

// POST /hook/set-status has two callers. Without credentials — the claudemesh CLI's hook
// and Claude Code's native http hook, as they always were — a request may only move a
// session between working and idle, and its reply is {ok:true} whether or not a session
// matched, so a stranger can neither end nor freeze a session nor learn that one exists.
// With Authorization: Bearer <hook token> (the member's, from {type:"hook_token"}) a
// request may also set dnd and end a session (SessionEnd), but only the token member's.
// HOOK_LEGACY_UNAUTHENTICATED=0 refuses the first kind. Both are rate limited per client IP
// and per (pid, cwd), and unmatched signals are kept only while few are waiting.

// hookBodyTimeout is how long a hook request's body may take to arrive.
const hookBodyTimeout = 10 * time.Second

func hookJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hookFail(w http.ResponseWriter, status int, text string) {
	hookJSON(w, status, map[string]any{"ok": false, "error": text})
}

// HookHandler serves POST /hook/set-status.
func (h *Hub) HookHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.metrics.HookRequests.Inc()
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			hookFail(w, http.StatusMethodNotAllowed, "method_not_allowed")
			return
		}
		// The body has 10 s to arrive: a request trickling it in would hold its connection.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(hookBodyTimeout))
		raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxMessageBytes)))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			hookFail(w, http.StatusRequestEntityTooLarge, "payload too large")
			return
		}
		if err != nil {
			hookFail(w, http.StatusBadRequest, "invalid JSON")
			return
		}
		ctx := r.Context()
		// Rate limits first, before any other database work: per client IP (all a stranger
		// controls; its bucket on this instance in front, so a refusal costs no query), then
		// per (pid, cwd) below.
		ip := connlimit.ClientIP(r, h.cfg.TrustProxyHeaders)
		if !h.hookAllow(w, ctx, h.ipHooks.Get(ip), "hookip:"+ip, h.cfg.HookIPRatePerMinute) {
			return
		}
		req, ignored, herr := presence.ParseHookBody(raw)
		if herr != nil {
			hookFail(w, herr.Status, herr.Text)
			return
		}
		if ignored {
			hookJSON(w, http.StatusOK, map[string]any{"ok": true, "ignored": true})
			return
		}
		// Credentials: a Bearer hook token scopes the request to its member.
		var memberID string
		if token := auth.BearerToken(r.Header.Get("Authorization")); token != "" {
			m, err := h.q.HookTokenMember(ctx, auth.HashToken(token))
			if errors.Is(err, pgx.ErrNoRows) {
				hookFail(w, http.StatusUnauthorized, "invalid hook token")
				return
			}
			if err != nil {
				h.log.Warn("hook token", "err", err)
				hookFail(w, http.StatusServiceUnavailable, "database unavailable")
				return
			}
			memberID = m.ID
		} else {
			if !h.cfg.HookLegacyUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hook"`)
				hookFail(w, http.StatusUnauthorized, "hook token required")
				return
			}
			if req.Status != presence.Working && req.Status != presence.Idle {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hook"`)
				hookFail(w, http.StatusUnauthorized, "hook token required to set dnd or end a session")
				return
			}
		}
		if !h.hookAllow(w, ctx, nil, hookBucketKey(memberID, ip, req), h.cfg.HookRatePerMinute) {
			return
		}
		res, err := h.applyHook(ctx, req, memberID, ip)
		if err != nil {
			h.log.Warn("hook", "err", err)
			hookFail(w, http.StatusServiceUnavailable, "database unavailable")
			return
		}
		if memberID == "" {
			// The same answer whether or not a session matched: a stranger learns nothing.
			hookJSON(w, http.StatusOK, map[string]any{"ok": true})
			return
		}
		hookJSON(w, http.StatusOK, res)
	})
}

// hookBucketKey names a request's (pid, cwd) bucket: under the token's member, or, without
// a token, under the client IP — so nobody can drain another member's or another address's
// bucket (a stranger's requests naming a victim's cwd used to spend the victim's hooks, and
// the bucket's level told whether the victim's hooks were firing). Hashed: cwd is long.
func hookBucketKey(memberID, ip string, req presence.HookRequest) string {
	who := "ip:" + ip
	if memberID != "" {
		who = "member:" + memberID
	}
	sum := sha256.Sum256([]byte(who + "\x00" + strconv.FormatInt(req.Pid, 10) + "\x00" + req.Cwd))
	return "hook:" + hex.EncodeToString(sum[:16])
}

// hookAllow takes a token from a shared hook rate bucket (behind local, when set),
// answering the request when it cannot.
func (h *Hub) hookAllow(w http.ResponseWriter, ctx context.Context, local *ratelimit.Bucket, key string, perMinute int) bool {
	var ok bool
	var err error
	if local != nil {
		ok, err = h.limiter.AllowBehind(ctx, local, key, float64(perMinute), float64(perMinute))
	} else {
		ok, err = h.limiter.Allow(ctx, key, float64(perMinute), float64(perMinute))
	}
	if err != nil {
		h.log.Warn("hook rate limit", "err", err)
		hookFail(w, http.StatusServiceUnavailable, "database unavailable")
		return false
	}
	if !ok {
		h.metrics.HookRateLimited.Inc()
		hookFail(w, http.StatusTooManyRequests, "rate limited")
		return false
	}
	return true
}

// applyHook applies a validated hook request to the presences it matches (memberID's only,
// when set), or keeps it pending; the result is the reply for an authenticated caller.
func (h *Hub) applyHook(ctx context.Context, req presence.HookRequest, memberID, ip string) (map[string]any, error) {
	targets, err := presence.HookTargets(ctx, h.q, req, memberID)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		kept, err := presence.KeepPending(ctx, h.q, req, memberID, ip)
		if err != nil {
			return nil, err
		}
		return map[string]any{"ok": true, "pending": kept}, nil
	}
	for _, t := range targets {
		switch presence.HookActionFor(req.Status, t.Status) {
		case presence.HookEnds:
			// Claude Code's SessionEnd: the presence is over now (peer_left at once), and
			// its socket, if still open, is closed.
			if err := h.EndPresence(ctx, t.ID, t.ConnectionEpoch, "session_end"); err != nil {
				h.log.Warn("hook session end", "err", err)
			}
			h.publish(ctx, notifier.KickPayload(t.ID, t.ConnectionEpoch+1))
		case presence.HookWakes:
			h.publish(ctx, notifier.WakePayloads([]string{t.ID}, nil, nil)[0])
		default:
			if err := h.writeStatus(ctx, t.ID, req.Status, presence.SourceHook); err != nil {
				h.log.Warn("hook status", "err", err)
			}
		}
	}
	return map[string]any{"ok": true, "presence_id": targets[0].ID}, nil
}

// hookToken answers {type:"hook_token", rotate?}: the member's hook token.
func (s *Session) hookToken(ctx context.Context, b *protocol.HookToken, reqID json.RawMessage) {
	token, err := auth.IssueHookToken(ctx, s.hub.pool, &s.hub.hookSecret, s.member.ID, b.Rotate)
	if err != nil {
		s.hub.log.Warn("hook token", "err", err)
		s.send(protocol.NewError(protocol.CodeInternal, "hook token unavailable; retry", reqID))
		return
	}
	res := map[string]any{"type": "hook_token", "token": token}
	if reqID != nil {
		res["_reqId"] = reqID
	}
	if b.ReqID != nil {
		res["reqId"] = b.ReqID
	}
	s.send(res)
}
