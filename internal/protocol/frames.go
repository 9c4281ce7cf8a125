package protocol

import "encoding/json"

// Group is a group membership: {name, role?}.
type Group struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// ---- client → broker -------------------------------------------------------------------

// Hello is the first frame of a session (PROTOCOL.md §3).
type Hello struct {
	MeshID          string   `json:"meshId"`
	MemberID        string   `json:"memberId"`
	Pubkey          string   `json:"pubkey"`
	SessionPubkey   string   `json:"sessionPubkey,omitempty"`
	SessionSig      string   `json:"sessionSig,omitempty"`
	DisplayName     string   `json:"displayName,omitempty"`
	SessionID       string   `json:"sessionId"`
	Pid             int64    `json:"pid"`
	Cwd             string   `json:"cwd"`
	Hostname        string   `json:"hostname,omitempty"`
	PeerType        string   `json:"peerType,omitempty"`
	Channel         string   `json:"channel,omitempty"`
	Model           string   `json:"model,omitempty"`
	Groups          []Group  `json:"groups,omitempty"`
	ProtocolVersion *int64   `json:"protocolVersion,omitempty"`
	Capabilities    []string `json:"capabilities,omitempty"`
	// Timestamp is ms since the epoch. HasTimestamp is false when it was absent or not a
	// finite number, which the hello checks report as timestamp_skew, as the original did.
	Timestamp    int64  `json:"-"`
	HasTimestamp bool   `json:"-"`
	Signature    string `json:"signature"`
}

// Send asks the broker to route an envelope (PROTOCOL.md §4).
type Send struct {
	TargetSpec      string `json:"targetSpec"`
	Priority        string `json:"priority"`
	Nonce           string `json:"nonce"`
	Ciphertext      string `json:"ciphertext"`
	ID              string `json:"id,omitempty"`
	ClientMessageID string `json:"clientMessageId,omitempty"`
}

// ClientAck acknowledges pushes ({messageId} or {messageIds}).
type ClientAck struct {
	MessageID  string   `json:"messageId,omitempty"`
	MessageIDs []string `json:"messageIds,omitempty"`
}

// SetStatus is a manual status change.
type SetStatus struct {
	Status string `json:"status"`
}

// SetSummary sets the presence's one-line summary.
type SetSummary struct {
	Summary string `json:"summary"`
}

// SetVisible hides or shows the presence.
type SetVisible struct {
	Visible bool `json:"visible"`
}

// SetProfile merges the given fields into the presence's profile.
type SetProfile struct {
	Avatar       *string  `json:"avatar,omitempty"`
	Title        *string  `json:"title,omitempty"`
	Bio          *string  `json:"bio,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// SetStats replaces the presence's reported counters.
type SetStats struct {
	Stats map[string]json.Number `json:"stats"`
}

// JoinGroup adds or replaces a group membership.
type JoinGroup struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// LeaveGroup removes a group membership.
type LeaveGroup struct {
	Name string `json:"name"`
}

// ListPeers asks for the mesh's live presences.
type ListPeers struct{}

// MessageStatus asks what became of a sent message.
type MessageStatus struct {
	MessageID string `json:"messageId"`
}

// AuditQuery pages through the mesh's audit log.
type AuditQuery struct {
	Limit     *int64 `json:"limit,omitempty"`
	Offset    *int64 `json:"offset,omitempty"`
	EventType string `json:"eventType,omitempty"`
}

// AuditVerify asks the broker to verify the mesh's chain.
type AuditVerify struct{}

// HookToken asks for the member's hook token (created on first request, the same after;
// Rotate replaces it): the Bearer credential of POST /hook/set-status.
type HookToken struct {
	Rotate bool `json:"rotate,omitempty"`
	// ReqID is echoed as reqId (the frame's _reqId is echoed as usual too).
	ReqID json.RawMessage `json:"reqId,omitempty"`
}

// ---- broker → client -------------------------------------------------------------------

// Error is {type:"error", code, message, _reqId?}.
type Error struct {
	Type    string          `json:"type"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	ID      string          `json:"id,omitempty"`
	ReqID   json.RawMessage `json:"_reqId,omitempty"`
}

// NewError builds an error frame.
func NewError(code, message string, reqID json.RawMessage) Error {
	return Error{Type: "error", Code: code, Message: message, ReqID: reqID}
}

// Ack answers a send (and, with queued false and empty ids, a few other requests).
type Ack struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	MessageID string          `json:"messageId"`
	Queued    bool            `json:"queued"`
	Error     string          `json:"error,omitempty"`
	ReqID     json.RawMessage `json:"_reqId,omitempty"`
}

// Push carries a message or a system event to a recipient.
type Push struct {
	Type               string          `json:"type"`
	MessageID          string          `json:"messageId"`
	MeshID             string          `json:"meshId"`
	SenderPubkey       string          `json:"senderPubkey"`
	SenderMemberPubkey string          `json:"senderMemberPubkey,omitempty"`
	Priority           string          `json:"priority"`
	Nonce              string          `json:"nonce"`
	Ciphertext         string          `json:"ciphertext"`
	CreatedAt          string          `json:"createdAt"`
	ClientMessageID    string          `json:"clientMessageId,omitempty"`
	Subtype            string          `json:"subtype,omitempty"`
	Event              string          `json:"event,omitempty"`
	EventData          json.RawMessage `json:"eventData,omitempty"`
}
