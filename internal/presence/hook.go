package presence

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// A hook signal (POST /hook/set-status) sets the status of the presences it names, or ends
// them; one that names none is kept pending for 10 s (the hello of the session it is for may
// not have arrived yet: the presence takes it when it is inserted).

// HookEnd is the status a hook request ends its presences with (Claude Code's SessionEnd).
const HookEnd = "end"

// Bounds on the hook signals waiting for their session (each kept 10 s): unauthenticated
// ones in all, and a token member's own, counted apart.
const (
	maxPendingStatuses       = 10000
	maxMemberPendingStatuses = 100
	maxIPPendingStatuses     = 100
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
	"UserPromptSubmit": Working,
	"PreToolUse":       Working,
	"Stop":             Idle,
	"StopFailure":      Idle,
	"SessionEnd":       HookEnd,
}

// HookRequest is a validated hook request. Status is Settable or HookEnd.
type HookRequest struct {
	Cwd, SessionID, Status string
	Pid                    int64
}

// HookError is a refused hook request: its HTTP status and error text.
type HookError struct {
	Status int
	Text   string
}

// ParseHookBody validates a hook body. ignored is true for a Claude Code event that carries
// no status. It never panics, whatever the bytes (FuzzParseHookBody).
func ParseHookBody(raw []byte) (req HookRequest, ignored bool, herr *HookError) {
	var b hookBody
	if json.Unmarshal(raw, &b) != nil {
		return req, false, &HookError{http.StatusBadRequest, "invalid JSON"}
	}
	status := b.Status
	if status == "" && b.HookEventName != "" {
		var known bool
		if status, known = hookEventStatus[b.HookEventName]; !known {
			return req, true, nil
		}
	}
	if b.Cwd == "" || status == "" {
		return req, false, &HookError{http.StatusBadRequest, "cwd and status required"}
	}
	if !Settable(status) && status != HookEnd {
		return req, false, &HookError{http.StatusBadRequest, "status must be idle, working or dnd"}
	}
	if len(b.Cwd) > protocol.MaxCwdBytes || len(b.SessionID) > protocol.MaxSessionIDBytes {
		return req, false, &HookError{http.StatusBadRequest, "cwd or session_id too long"}
	}
	req = HookRequest{Cwd: b.Cwd, SessionID: b.SessionID, Status: status}
	if len(b.Pid) > 0 && string(b.Pid) != "null" {
		pid, err := strconv.ParseInt(string(b.Pid), 10, 32)
		if err != nil {
			return req, false, &HookError{http.StatusBadRequest, "pid must be an integer"}
		}
		req.Pid = pid
	}
	return req, false, nil
}

// HookTargets returns the live presences a hook request is for: those whose hello named its
// Claude Code session id; else those with its (pid, cwd); else the most recently connected
// one with its cwd in each mesh. With memberID (a hook token's member) only that member's.
func HookTargets(ctx context.Context, q *db.Queries, req HookRequest, memberID string) ([]db.HookTargetsRow, error) {
	return q.HookTargets(ctx, db.HookTargetsParams{HookSessionID: req.SessionID, HookCwd: req.Cwd, HookPid: int32(req.Pid), MemberID: memberID})
}

// HookAction is what a hook request does to one presence it is for.
type HookAction int

const (
	// HookEnds ends the presence (peer_left at once) and closes its socket.
	HookEnds HookAction = iota
	// HookWakes leaves the status as it is and only wakes the presence: DND is never
	// cleared by a hook (the original drained the presence's messages here).
	HookWakes
	// HookWrites writes the request's status under the status rules (WriteStatus, source "hook").
	HookWrites
)

// HookActionFor decides what a request with status reqStatus does to a presence whose
// status is targetStatus.
func HookActionFor(reqStatus, targetStatus string) HookAction {
	switch {
	case reqStatus == HookEnd:
		return HookEnds
	case targetStatus == DND:
		return HookWakes
	default:
		return HookWrites
	}
}

// KeepPending keeps a hook request that matched no presence, for the presence its session
// opens within 10 s, unless too many are waiting already (in all, for memberID, or from ip);
// kept reports whether it was kept. A request ending a session is never kept.
func KeepPending(ctx context.Context, q *db.Queries, req HookRequest, memberID, ip string) (kept bool, err error) {
	if req.Status == HookEnd {
		return false, nil
	}
	var sid, mid *string
	if req.SessionID != "" {
		sid = &req.SessionID
	}
	if memberID != "" {
		mid = &memberID
	}
	n, err := q.InsertPendingStatus(ctx, db.InsertPendingStatusParams{
		Pid: int32(req.Pid), Cwd: req.Cwd, SessionID: sid, Status: req.Status, MemberID: mid,
		MaxPending: maxPendingStatuses, MaxMemberPending: maxMemberPendingStatuses,
		ClientIp: ip, MaxIpPending: maxIPPendingStatuses,
	})
	if err != nil {
		return false, err
	}
	return n == 1, nil
}
