package session

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// hookBody is POST /hook/set-status: the claudemesh CLI's {cwd, pid?, status, session_id?},
// or Claude Code's own HTTP hook body {session_id, cwd, hook_event_name, …}.
type hookBody struct {
	Cwd           string          `json:"cwd"`
	Pid           json.RawMessage `json:"pid"`
	Status        string          `json:"status"`
	SessionID     string          `json:"session_id"`
	HookEventName string          `json:"hook_event_name"`
}

// hookEventStatus maps Claude Code hook events to statuses; "end" ends the presence.
var hookEventStatus = map[string]string{
	"UserPromptSubmit": "working",
	"PreToolUse":       "working",
	"Stop":             "idle",
	"StopFailure":      "idle",
	"SessionEnd":       "end",
}

func hookJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// HookHandler serves POST /hook/set-status.
func (h *Hub) HookHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.metrics.HookRequests.Inc()
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			hookJSON(w, http.StatusMethodNotAllowed, map[string]any{"ok": false, "error": "method_not_allowed"})
			return
		}
		raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxMessageBytes)))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			hookJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"ok": false, "error": "payload too large"})
			return
		}
		var b hookBody
		if err != nil || json.Unmarshal(raw, &b) != nil {
			hookJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "invalid JSON"})
			return
		}
		status := b.Status
		if status == "" && b.HookEventName != "" {
			var known bool
			if status, known = hookEventStatus[b.HookEventName]; !known {
				hookJSON(w, http.StatusOK, map[string]any{"ok": true, "ignored": true})
				return
			}
		}
		if b.Cwd == "" || status == "" {
			hookJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "cwd and status required"})
			return
		}
		if status != "idle" && status != "working" && status != "dnd" && status != "end" {
			hookJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "status must be idle, working or dnd"})
			return
		}
		var pid int64
		if len(b.Pid) > 0 && string(b.Pid) != "null" {
			if pid, err = strconv.ParseInt(string(b.Pid), 10, 32); err != nil {
				hookJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "pid must be an integer"})
				return
			}
		}
		ctx := r.Context()
		ok, err := h.limiter.Allow(ctx, "hook:"+strconv.FormatInt(pid, 10)+":"+b.Cwd, float64(h.cfg.HookRatePerMinute), float64(h.cfg.HookRatePerMinute))
		if err != nil {
			h.log.Warn("hook rate limit", "err", err)
			hookJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "error": "database unavailable"})
			return
		}
		if !ok {
			h.metrics.HookRateLimited.Inc()
			hookJSON(w, http.StatusTooManyRequests, map[string]any{"ok": false, "error": "rate limited"})
			return
		}
		targets, err := h.q.HookTargets(ctx, db.HookTargetsParams{HookSessionID: b.SessionID, HookCwd: b.Cwd, HookPid: int32(pid)})
		if err != nil {
			h.log.Warn("hook targets", "err", err)
			hookJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "error": "database unavailable"})
			return
		}
		if len(targets) == 0 {
			if status != "end" {
				var sid *string
				if b.SessionID != "" {
					sid = &b.SessionID
				}
				if err := h.q.InsertPendingStatus(ctx, db.InsertPendingStatusParams{Pid: int32(pid), Cwd: b.Cwd, SessionID: sid, Status: status}); err != nil {
					hookJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "error": "database unavailable"})
					return
				}
			}
			hookJSON(w, http.StatusOK, map[string]any{"ok": true, "pending": status != "end"})
			return
		}
		for _, t := range targets {
			switch {
			case status == "end":
				// Claude Code's SessionEnd: the presence is over now (peer_left at once), and
				// its socket, if still open, is closed.
				if err := h.endPresence(ctx, t.ID, t.ConnectionEpoch, "session_end"); err != nil {
					h.log.Warn("hook session end", "err", err)
				}
				h.publish(ctx, notifier.KickPayload(t.ID, t.ConnectionEpoch+1))
			case t.Status == "dnd":
				// DND is never cleared by a hook; wake anyway, as the original drained here.
				h.publish(ctx, notifier.WakePayloads([]string{t.ID}, nil)[0])
			default:
				if err := h.writeStatus(ctx, t.ID, status, "hook"); err != nil {
					h.log.Warn("hook status", "err", err)
				}
			}
		}
		hookJSON(w, http.StatusOK, map[string]any{"ok": true, "presence_id": targets[0].ID})
	})
}
