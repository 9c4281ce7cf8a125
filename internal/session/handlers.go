package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/presence"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// auditCatchUp bounds how long audit_query and audit_verify wait for the audit chain to take
// in what other transactions, still running, hold back (see audit.ChainCaughtUp).
const auditCatchUp = 2 * time.Second

// handle dispatches one decoded frame of an authenticated session. Unknown types are
// ignored, as the original did (clients of newer brokers send types older ones lack).
// Every frame but send (and a second hello, refused outright) draws on the session's
// control budget, and a frame with a field over its bound changes nothing: both are
// answered with an error frame.
func (s *Session) handle(ctx context.Context, f protocol.Frame) {
	h := s.hub
	switch f.Body.(type) {
	case nil:
		return
	case *protocol.Hello:
		s.send(protocol.NewError(protocol.CodeAlreadyAuthenticated, "this socket already sent hello", f.ReqID))
		return
	}
	if ack, isAck := f.Body.(*protocol.ClientAck); isAck && s.takeAckCredit(ack) {
		// Acknowledging what the broker pushed is paid for by the pushes (ackCredit): a
		// client_ack client receiving more than the control budget's 20 frames a second
		// must not have its acks refused (each refusal a redelivery).
	} else if _, isSend := f.Body.(*protocol.Send); !isSend {
		cost := 1.0
		switch f.Body.(type) {
		case *protocol.ListPeers:
			cost = listPeersCost
		case *protocol.AuditQuery:
			cost = auditQueryCost
		case *protocol.AuditVerify:
			cost = auditVerifyCost
		}
		if !s.control.Take(cost) {
			h.metrics.MessagesRejected.WithLabelValues("rate_limit").Inc()
			s.send(protocol.NewError(protocol.CodeRateLimit, "too many requests on this session; slow down", f.ReqID))
			return
		}
	}
	if b, ok := f.Body.(interface{ Bounds() protocol.BoundsError }); ok {
		if e := b.Bounds(); e != "" {
			h.metrics.MessagesRejected.WithLabelValues("too_large").Inc()
			s.send(protocol.NewError(protocol.CodeTooLarge, string(e), f.ReqID))
			return
		}
	}
	switch b := f.Body.(type) {
	case *protocol.Send:
		s.handleSend(ctx, b)
	case *protocol.ClientAck:
		ids := b.MessageIDs
		if b.MessageID != "" {
			ids = append(ids, b.MessageID)
		}
		ids = s.logAck(ids) // broadcast and group pushes move the log cursor; the rest are deliveries
		if len(ids) > 0 {
			pid := s.presenceID
			if _, err := h.q.MarkDeliveredByMessage(ctx, db.MarkDeliveredByMessageParams{MessageIds: ids, PresenceID: &pid}); err != nil {
				if !h.acks.add(pid, ids) {
					h.log.Warn("client_ack not written and not kept for a retry (too many waiting)", "err", err)
				}
			}
		}
	case *protocol.SetStatus:
		if !s.setStatus(ctx, b.Status, presence.SourceManual) {
			s.send(protocol.NewError(protocol.CodeInvalid, "status must be idle, working or dnd", f.ReqID))
		}
	case *protocol.SetSummary:
		_ = h.q.SetPresenceSummary(ctx, db.SetPresenceSummaryParams{ID: s.presenceID, Summary: &b.Summary})
	case *protocol.SetVisible:
		_ = h.q.SetPresenceVisible(ctx, db.SetPresenceVisibleParams{ID: s.presenceID, Visible: b.Visible})
		event := "peer_hidden"
		if b.Visible {
			event = "peer_visible"
		}
		// To every other session of the mesh, the member's own other sessions included.
		h.systemPushExcept(ctx, s.member.MeshID, "", s.presenceID, event, map[string]any{"name": s.name, "pubkey": s.pubkey})
		s.send(protocol.Ack{Type: "ack", ID: reqIDString(f.ReqID), Queued: false, ReqID: f.ReqID})
	case *protocol.SetProfile:
		patch := map[string]any{}
		if b.Avatar != nil {
			patch["avatar"] = *b.Avatar
		}
		if b.Title != nil {
			patch["title"] = *b.Title
		}
		if b.Bio != nil {
			patch["bio"] = *b.Bio
		}
		if b.Capabilities != nil {
			patch["capabilities"] = b.Capabilities
		}
		raw, _ := json.Marshal(patch)
		if err := h.q.MergePresenceProfile(ctx, db.MergePresenceProfileParams{ID: s.presenceID, Patch: raw}); err != nil {
			h.log.Warn("set profile", "err", err)
		}
		s.send(protocol.Ack{Type: "ack", ID: reqIDString(f.ReqID), Queued: false, ReqID: f.ReqID})
	case *protocol.SetStats:
		raw, _ := json.Marshal(b.Stats)
		if err := h.q.SetPresenceStats(ctx, db.SetPresenceStatsParams{ID: s.presenceID, Stats: raw}); err != nil {
			h.log.Warn("set stats", "err", err)
		}
	case *protocol.JoinGroup:
		full := false
		s.updateGroups(ctx, func(gs []protocol.Group) ([]protocol.Group, bool) {
			for i := range gs {
				if gs[i].Name == b.Name {
					gs[i] = protocol.Group{Name: b.Name, Role: b.Role}
					return gs, true
				}
			}
			if len(gs) >= protocol.MaxGroups {
				full = true
				return gs, false
			}
			return append(gs, protocol.Group{Name: b.Name, Role: b.Role}), true
		})
		if full {
			h.metrics.MessagesRejected.WithLabelValues("too_large").Inc()
			s.send(protocol.NewError(protocol.CodeTooLarge, fmt.Sprintf("already in %d groups; the limit is %d", protocol.MaxGroups, protocol.MaxGroups), f.ReqID))
		}
	case *protocol.LeaveGroup:
		s.updateGroups(ctx, func(gs []protocol.Group) ([]protocol.Group, bool) {
			out := gs[:0]
			for _, g := range gs {
				if g.Name != b.Name {
					out = append(out, g)
				}
			}
			return out, true
		})
	case *protocol.ListPeers:
		s.listPeers(ctx, f.ReqID)
	case *protocol.MessageStatus:
		s.messageStatus(ctx, b.MessageID, f.ReqID)
	case *protocol.AuditQuery:
		s.auditQuery(ctx, b, f.ReqID)
	case *protocol.AuditVerify:
		if !h.memberVerifies.Take(s.member.ID, 1) {
			h.metrics.MessagesRejected.WithLabelValues("rate_limit").Inc()
			s.send(protocol.NewError(protocol.CodeRateLimit, "audit_verify reads the whole chain: at most 2 a minute per member; retry later", f.ReqID))
			return
		}
		v, err := h.verifyMesh(ctx, s.member.MeshID)
		if err != nil {
			s.send(protocol.NewError(protocol.CodeAuditVerifyError, err.Error(), f.ReqID))
			return
		}
		res := map[string]any{"type": "audit_verify_result", "valid": v.Valid, "entries": v.Entries}
		if !v.Valid {
			res["brokenAt"] = v.BrokenAt
		}
		if f.ReqID != nil {
			res["_reqId"] = f.ReqID
		}
		s.send(res)
	case *protocol.HookToken:
		s.hookToken(ctx, b, f.ReqID)
	}
}

func reqIDString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func (s *Session) handleSend(ctx context.Context, b *protocol.Send) {
	h := s.hub
	reject := func(reason, msg string) {
		h.metrics.MessagesRejected.WithLabelValues(reason).Inc()
		s.send(protocol.Ack{Type: "ack", ID: b.ID, Queued: false, Error: msg})
	}
	if h.cfg.SendRatePerMinute > 0 {
		// The member's bucket is shared by its sessions on every instance; the session's own,
		// in front of it, turns most refusals away without a query.
		ok, err := h.limiter.AllowBehind(ctx, s.sendBudget, "send:"+s.member.ID, float64(h.cfg.SendRateBurst), float64(h.cfg.SendRatePerMinute))
		if err != nil {
			h.log.Warn("send rate limit", "err", err)
			reject("parse_or_handler", "broker could not store the message; retry")
			return
		}
		if !ok {
			reject("rate_limit", fmt.Sprintf("rate_limit: max %d msg/min (burst %d) — slow down", h.cfg.SendRatePerMinute, h.cfg.SendRateBurst))
			return
		}
	}
	if n := len(b.Ciphertext) + len(b.Nonce) + len(b.TargetSpec); n > h.cfg.MaxMessageBytes {
		reject("too_large", fmt.Sprintf("payload too large: %d bytes > MAX_MESSAGE_BYTES=%d", n, h.cfg.MaxMessageBytes))
		return
	}
	if n := len(b.ClientMessageID); n > protocol.MaxClientMessageIDBytes {
		reject("too_large", fmt.Sprintf("clientMessageId is %d bytes; the limit is %d", n, protocol.MaxClientMessageIDBytes))
		return
	}
	switch b.Priority {
	case "now", "next", "low":
	default:
		reject("parse_or_handler", "priority must be now, next or low")
		return
	}
	// Pipelined: the read loop goes on while the send is stored; acks come back in order.
	// At most maxInFlightSends per session are outstanding (backpressure on the socket).
	s.inflight <- struct{}{}
	h.router.SendAsync(ctx, delivery.Sender{
		MeshID: s.member.MeshID, MemberID: s.member.ID, MemberPubkey: s.member.Pubkey, DisplayName: s.name,
		PresenceID: s.presenceID, SessionPubkey: s.hello.SessionPubkey,
	}, delivery.Request{TargetSpec: b.TargetSpec, Priority: b.Priority, Nonce: b.Nonce, Ciphertext: b.Ciphertext, ClientMessageID: b.ClientMessageID},
		func(out delivery.Outcome, err error) {
			<-s.inflight
			switch {
			case err != nil:
				h.log.Warn("send", "err", err)
				reject("parse_or_handler", "broker could not store the message; retry")
			case !out.Queued && out.Reason == "grant":
				s.send(protocol.Ack{Type: "ack", ID: b.ID, Queued: false, Error: out.Error})
			case !out.Queued:
				reject(out.Reason, out.Error)
			default:
				s.send(protocol.Ack{Type: "ack", ID: b.ID, MessageID: out.MessageID, Queued: true})
			}
		})
}

// setStatus records a status under the status rules; false for an unknown status.
func (s *Session) setStatus(ctx context.Context, status, source string) bool {
	if !presence.Settable(status) {
		return false
	}
	if err := s.hub.writeStatus(ctx, s.presenceID, status, source); err != nil {
		s.hub.log.Warn("set status", "err", err)
	}
	return true
}

// writeStatus applies the status rules (presence.WriteStatus) to a presence; a change to
// idle wakes the presence wherever it is held, so messages held by priority gating flow at once.
func (h *Hub) writeStatus(ctx context.Context, presenceID, status, source string) error {
	becameIdle, err := presence.WriteStatus(ctx, h.q, presenceID, status, source, h.cfg.HookFreshWindow)
	if err != nil {
		return err
	}
	if becameIdle {
		h.publish(ctx, notifier.WakePayloads([]string{presenceID}, nil, nil)[0])
	}
	return nil
}

// updateGroups applies fn to the presence's groups; fn reports false to leave them as they are.
func (s *Session) updateGroups(ctx context.Context, fn func([]protocol.Group) ([]protocol.Group, bool)) {
	h := s.hub
	err := pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		raw, err := q.GetPresenceGroups(ctx, s.presenceID)
		if err != nil {
			return err
		}
		var gs []protocol.Group
		_ = json.Unmarshal(raw, &gs)
		gs, changed := fn(gs)
		if !changed {
			return nil
		}
		if gs == nil {
			gs = []protocol.Group{}
		}
		out, _ := json.Marshal(gs)
		return q.SetPresenceGroups(ctx, db.SetPresenceGroupsParams{ID: s.presenceID, Groups: out})
	})
	if err != nil {
		h.log.Warn("update groups", "err", err)
	}
}

type peerEntry struct {
	Pubkey       string          `json:"pubkey"`
	MemberPubkey string          `json:"memberPubkey"`
	DisplayName  string          `json:"displayName"`
	Status       string          `json:"status"`
	Summary      *string         `json:"summary"`
	Groups       json.RawMessage `json:"groups"`
	SessionID    string          `json:"sessionId"`
	ConnectedAt  string          `json:"connectedAt"`
	Cwd          string          `json:"cwd"`
	Hostname     *string         `json:"hostname,omitempty"`
	PeerType     *string         `json:"peerType,omitempty"`
	Channel      *string         `json:"channel,omitempty"`
	Model        *string         `json:"model,omitempty"`
	Visible      bool            `json:"visible"`
	Profile      json.RawMessage `json:"profile,omitempty"`
	Stats        json.RawMessage `json:"stats,omitempty"`
}

func (s *Session) listPeers(ctx context.Context, reqID json.RawMessage) {
	rows, err := s.hub.q.ListLivePeers(ctx, s.member.MeshID)
	if err != nil {
		s.hub.log.Warn("list peers", "err", err)
		rows = nil
	}
	peers := make([]json.RawMessage, 0, len(rows))
	budget := newReplyBudget(MaxPeersListBytes)
	for _, r := range rows {
		if !r.Visible && r.MemberID != s.member.ID {
			continue
		}
		e := peerEntry{
			Pubkey: r.MemberPubkey, MemberPubkey: r.MemberPubkey, DisplayName: r.MemberDisplayName,
			Status: r.Status, Summary: r.Summary, Groups: rawOr(r.Groups, "[]"), SessionID: r.SessionID,
			ConnectedAt: audit.FormatTime(r.ConnectedAt), Cwd: r.Cwd, Hostname: r.Hostname, PeerType: r.PeerType,
			Channel: r.Channel, Model: r.Model, Visible: r.Visible,
		}
		if r.SessionPubkey != nil && *r.SessionPubkey != "" {
			e.Pubkey = *r.SessionPubkey
		}
		if r.DisplayName != nil && *r.DisplayName != "" {
			e.DisplayName = *r.DisplayName
		}
		if len(r.Profile) > 2 {
			e.Profile = r.Profile
		}
		if len(r.Stats) > 2 {
			e.Stats = r.Stats
		}
		if !budget.add(&peers, e) {
			break
		}
	}
	res := map[string]any{"type": "peers_list", "peers": peers}
	if budget.truncated {
		res["truncated"] = true
	}
	if reqID != nil {
		res["_reqId"] = reqID
	}
	s.send(res)
}

func (s *Session) messageStatus(ctx context.Context, messageID string, reqID json.RawMessage) {
	st, err := s.hub.q.MessageDeliveryState(ctx, messageID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && st.MeshID != s.member.MeshID) {
		s.send(protocol.NewError(protocol.CodeNotFound, "message not found", reqID))
		return
	}
	if err != nil {
		s.send(protocol.NewError(protocol.CodeInternal, "message status unavailable", reqID))
		return
	}
	var recips []statusRecipient
	delivered, lastAt := false, any(st.LastDeliveredAt)
	if st.MeshSeq != nil {
		recips, delivered, lastAt, err = s.logStatus(ctx, st)
	} else {
		delivered = st.Recipients > 0 && st.Delivered == st.Recipients
		var rows []db.MessageRecipientsRow
		rows, err = s.hub.q.MessageRecipients(ctx, st.ID)
		for _, r := range rows {
			recips = append(recips, statusRecipient{name: r.Name, pubkey: r.Pubkey, delivered: r.DeliveredAt != nil})
		}
	}
	if err != nil {
		s.send(protocol.NewError(protocol.CodeInternal, "message status unavailable", reqID))
		return
	}
	recipients := make([]json.RawMessage, 0, len(recips))
	budget := newReplyBudget(MaxMessageStatusBytes)
	for i, r := range recips {
		status := "held"
		if r.delivered {
			status = "delivered"
		}
		if i == maxRecipientsPerStatus || !budget.add(&recipients, map[string]any{"name": r.name, "pubkey": r.pubkey, "status": status}) {
			budget.truncated = true
			break
		}
	}
	res := map[string]any{"type": "message_status_result", "messageId": st.ID, "targetSpec": st.TargetSpec,
		"delivered": delivered, "deliveredAt": nil, "recipients": recipients}
	if budget.truncated {
		res["truncated"] = true
	}
	if t, ok := lastAt.(time.Time); ok && delivered {
		res["deliveredAt"] = audit.FormatTime(t)
	}
	if reqID != nil {
		res["_reqId"] = reqID
	}
	s.send(res)
}

type statusRecipient struct {
	name, pubkey string
	delivered    bool
}

// logStatus is message_status for a broadcast or group message (a log entry): its
// recipients are the presences that could read it (LogRecipients) that it reaches, decided
// now as delivery decides (delivery.Reaches); delivered when their cursor passed it. Its
// deliveredAt is when the last of their cursors was stored past it, at most a poll interval
// after the push.
func (s *Session) logStatus(ctx context.Context, st db.MessageDeliveryStateRow) (recips []statusRecipient, all bool, lastAt any, err error) {
	rows, err := s.hub.q.LogRecipients(ctx, db.LogRecipientsParams{Seq: *st.MeshSeq, MeshID: st.MeshID, SenderMemberID: st.SenderMemberID})
	if err != nil {
		return nil, false, nil, err
	}
	e := delivery.LogEntry{SenderMemberID: st.SenderMemberID, SenderMemberPubkey: st.SenderMemberPubkey,
		TargetKind: st.TargetKind, TargetSpec: st.TargetSpec}
	if st.SenderSessionPubkey != nil {
		e.SenderSessionPubkey = *st.SenderSessionPubkey
	}
	var last time.Time
	all = true
	for _, r := range rows {
		if ok, _ := delivery.NewLogReader("", r.Visible, r.Groups, r.PeerGrants).Reaches(e); !ok {
			continue
		}
		recips = append(recips, statusRecipient{name: r.Name, pubkey: r.Pubkey, delivered: r.Delivered})
		all = all && r.Delivered
		if r.Delivered && r.LogAckedAt != nil && r.LogAckedAt.After(last) {
			last = *r.LogAckedAt
		}
	}
	if len(recips) == 0 || last.IsZero() {
		return recips, false, nil, nil
	}
	return recips, all, last, nil
}

func (s *Session) auditQuery(ctx context.Context, b *protocol.AuditQuery, reqID json.RawMessage) {
	limit, offset := int64(50), int64(0)
	if b.Limit != nil && *b.Limit > 0 {
		limit = min(*b.Limit, 1000)
	}
	if b.Offset != nil && *b.Offset > 0 {
		offset = min(*b.Offset, maxAuditOffset)
	}
	var ev *string
	if b.EventType != "" {
		ev = &b.EventType
	}
	q := s.hub.q
	if err := audit.ChainCaughtUp(ctx, s.hub.pool, s.member.MeshID, auditCatchUp); err != nil {
		s.send(protocol.NewError(protocol.CodeAuditQueryError, err.Error(), reqID))
		return
	}
	rows, err := q.AuditPage(ctx, db.AuditPageParams{MeshID: s.member.MeshID, EventType: ev, Lim: int32(limit), Off: int32(min(offset, 1<<31-1))})
	if err != nil {
		s.send(protocol.NewError(protocol.CodeAuditQueryError, err.Error(), reqID))
		return
	}
	total, err := q.AuditCount(ctx, db.AuditCountParams{MeshID: s.member.MeshID, EventType: ev})
	if err != nil {
		s.send(protocol.NewError(protocol.CodeAuditQueryError, err.Error(), reqID))
		return
	}
	entries := make([]json.RawMessage, 0, len(rows))
	budget := newReplyBudget(MaxAuditResultBytes)
	for _, r := range rows {
		actor := "system"
		if r.ActorDisplayName != nil {
			actor = *r.ActorDisplayName
		} else if r.ActorMemberID != nil {
			actor = *r.ActorMemberID
		}
		if !budget.add(&entries, map[string]any{"id": r.ID, "eventType": r.EventType, "actor": actor,
			"payload": json.RawMessage(r.Payload), "hash": r.Hash, "createdAt": audit.FormatTime(r.CreatedAt)}) {
			break
		}
	}
	res := map[string]any{"type": "audit_result", "entries": entries, "total": total}
	if budget.truncated {
		res["truncated"] = true
	}
	if reqID != nil {
		res["_reqId"] = reqID
	}
	s.send(res)
}

// verifyCall is one audit verification in flight, shared by the sessions that ask for the
// same mesh meanwhile.
type verifyCall struct {
	done chan struct{}
	v    audit.Verification
	err  error
}

// verifyMesh verifies a mesh's chain (after chaining what is pending), once at a time per
// mesh on this instance: a request arriving while one runs gets that one's result. Each
// verification reads the whole chain (a page at a time), so this, with the request budget,
// is what bounds the work members can ask for.
func (h *Hub) verifyMesh(ctx context.Context, meshID string) (audit.Verification, error) {
	h.verifyMu.Lock()
	c, running := h.verifies[meshID]
	if !running {
		c = &verifyCall{done: make(chan struct{})}
		h.verifies[meshID] = c
	}
	h.verifyMu.Unlock()
	if running {
		select {
		case <-c.done:
			return c.v, c.err
		case <-ctx.Done():
			return audit.Verification{}, ctx.Err()
		}
	}
	defer func() {
		h.verifyMu.Lock()
		delete(h.verifies, meshID)
		h.verifyMu.Unlock()
		close(c.done)
	}()
	if c.err = audit.ChainCaughtUp(ctx, h.pool, meshID, auditCatchUp); c.err != nil {
		return c.v, c.err
	}
	c.v, c.err = audit.VerifyMesh(ctx, h.q, meshID)
	return c.v, c.err
}
