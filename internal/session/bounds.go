package session

import (
	"encoding/json"

	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Bounds on what one session can make the broker do and send. The field bounds are in
// protocol (limits.go); here are the per-session request budget and the reply caps.

// The control budget: frames other than send (which has its member-wide rate limit) that a
// session may send, as a token bucket. list_peers costs more: its reply is the largest.
// A member holds at most MAX_SESSIONS_PER_MEMBER sessions, so its budget is bounded too.
const (
	controlBurst     = 60
	controlPerSecond = 20
	listPeersCost    = 5
	// audit_query counts the mesh's chain, audit_verify reads all of it: at most one a
	// second, sustained, per session.
	auditQueryCost  = 20
	auditVerifyCost = 20
	// maxAuditOffset bounds how far back audit_query pages (OFFSET reads what it skips).
	maxAuditOffset = 100_000
	// maxAckCredit bounds the client_acks a session may send outside the control budget:
	// one per message push written to it, at most this many banked.
	maxAckCredit = 100_000
)

// takeAckCredit pays for a client_ack from the pushes written to this session: true when
// the credit covered it (one per id), false when the control budget must.
func (s *Session) takeAckCredit(ack *protocol.ClientAck) bool {
	n := int64(len(ack.MessageIDs))
	if ack.MessageID != "" {
		n++
	}
	for {
		have := s.ackCredit.Load()
		if have < n || n == 0 {
			return false
		}
		if s.ackCredit.CompareAndSwap(have, have-n) {
			return true
		}
	}
}

// The hello budget of a member (in memory, per instance): every hello that gets as far as
// writing — a new session, a takeover, a reconnect — draws one, so a member cannot loop
// takeovers (each an audit event kept for ever, a replay row and a kick notification).
const (
	memberHelloBurst     = 30
	memberHelloPerSecond = 1
)

// audit_verify per member (in memory, per instance): it reads the mesh's whole chain, which
// the member's own sends make longer.
const (
	memberVerifyBurst     = 2
	memberVerifyPerSecond = 1.0 / 30
)

// Reply caps: a reply never grows past these, whatever the mesh holds. Entries that do not
// fit are left out and the reply says truncated:true (clients that do not know the field
// ignore it). The session's 8 MiB queue cap is well above them, so a reply to one's own
// request can never cut one's socket.
const (
	MaxPeersListBytes      = 2 << 20
	MaxAuditResultBytes    = 1 << 20
	MaxMessageStatusBytes  = 256 << 10
	maxRecipientsPerStatus = 1000
)

// meshPolicy is hello_ack's meshPolicy: {selfEditable: {displayName, roleTag, groups,
// messageMode}}, or absent when the mesh has no policy.
func meshPolicy(selfEditable []byte) json.RawMessage {
	if len(selfEditable) == 0 || string(selfEditable) == "null" {
		return nil
	}
	b, err := json.Marshal(struct {
		SelfEditable json.RawMessage `json:"selfEditable"`
	}{selfEditable})
	if err != nil {
		return nil
	}
	return b
}

func savedGroups(ps *auth.SavedState) []byte {
	if ps == nil {
		return nil
	}
	return ps.Groups
}

// boundedGroups keeps the groups of stored state (a peer state saved, or member defaults
// set, before the bounds existed) that are within bounds, at most MaxGroups of them.
func boundedGroups(raw []byte) json.RawMessage {
	var gs []protocol.Group
	if len(raw) == 0 || json.Unmarshal(raw, &gs) != nil {
		return json.RawMessage("[]")
	}
	out := make([]protocol.Group, 0, min(len(gs), protocol.MaxGroups))
	for _, g := range gs {
		if len(out) == protocol.MaxGroups {
			break
		}
		if protocol.CheckGroup("group", g) == "" {
			out = append(out, g)
		}
	}
	b, _ := json.Marshal(out)
	return b
}

// boundedProfile keeps a saved profile's known fields that are within bounds.
func boundedProfile(raw []byte) []byte {
	var p protocol.SetProfile
	if len(raw) == 0 || json.Unmarshal(raw, &p) != nil {
		return []byte("{}")
	}
	if p.Avatar != nil && len(*p.Avatar) > protocol.MaxAvatarBytes {
		p.Avatar = nil
	}
	if p.Title != nil && len(*p.Title) > protocol.MaxTitleBytes {
		p.Title = nil
	}
	if p.Bio != nil && len(*p.Bio) > protocol.MaxBioBytes {
		p.Bio = nil
	}
	if (&protocol.SetProfile{Capabilities: p.Capabilities}).Bounds() != "" {
		p.Capabilities = nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return []byte("{}")
	}
	return b
}

// boundedStats is saved stats if within bounds, else none.
func boundedStats(raw []byte) json.RawMessage {
	var st protocol.SetStats
	if len(raw) == 0 || json.Unmarshal(raw, &st.Stats) != nil || st.Bounds() != "" {
		return nil
	}
	return raw
}

// replyBudget admits a reply's list entries while their encoded size stays within a cap.
type replyBudget struct {
	left      int
	truncated bool
}

// replyOverhead is room kept for the reply's other fields (type, _reqId, counts).
const replyOverhead = 1024

func newReplyBudget(max int) *replyBudget { return &replyBudget{left: max - replyOverhead} }

// add appends v, encoded, to list if it fits; false (and truncated set) when it does not.
func (b *replyBudget) add(list *[]json.RawMessage, v any) bool {
	raw, err := json.Marshal(v)
	if err != nil {
		return true // skipped, not a reason to stop
	}
	if len(raw)+1 > b.left {
		b.truncated = true
		return false
	}
	b.left -= len(raw) + 1
	*list = append(*list, raw)
	return true
}
