// Package delivery is the write half of messaging: it turns an accepted send into rows —
// the envelope, one delivery per recipient, the audit entry — in one transaction, commits,
// and publishes a wake-up for the recipients so whichever instance holds them claims and
// pushes (internal/session). Nothing is acknowledged before it is stored, and nothing is
// delivered by an in-process shortcut: a DM between two sockets of one instance takes the
// same path as one across instances.
//
// A Router is safe for concurrent use.
package delivery

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Sender identifies who sends.
type Sender struct {
	MeshID        string
	MemberID      string
	MemberPubkey  string
	DisplayName   string
	PresenceID    string
	SessionPubkey string // "" when the session has no key of its own
}

// Request is one send.
type Request struct {
	TargetSpec      string
	Priority        string
	Nonce           string
	Ciphertext      string
	ClientMessageID string
}

// Outcome is what the sender is acked with.
type Outcome struct {
	MessageID string
	Queued    bool
	Reason    string // metric reason when refused: no_recipient, too_large, …; "grant" for a grant block
	Error     string // the ack's error text when refused
	Duplicate bool   // a retried clientMessageId: the stored message's id is returned
}

// Error texts of refused sends, as the original's acks carried them.
const (
	ErrTextNoRecipient = "no connected peer for target (not online, or targetSpec is your own key without another session)"
	ErrTextGrantDM     = "blocked by recipient grants (sender lacks dm capability)"
)

// DefaultCaps are the capabilities a recipient grants a sender it has no entry for.
var DefaultCaps = []string{"read", "dm", "broadcast", "state-read"}

// TargetKind classifies a targetSpec: "direct" for 64 hex characters, "broadcast" for * and
// @all, "group" for @name, "" for anything else (refused: it could never be delivered).
func TargetKind(spec string) string {
	switch {
	case spec == "*" || spec == "@all":
		return "broadcast"
	case len(spec) > 1 && spec[0] == '@' && len(spec) <= 1+protocol.MaxGroupNameBytes:
		// A longer name can match no group (names are bounded); refusing it keeps such a
		// target out of the message row and its audit event.
		return "group"
	case protocol.IsHex(spec, 64):
		return "direct"
	}
	return ""
}

// Allowed applies a recipient's grants (reference §5.1): an entry under the sender's member
// key decides (an empty list blocks); else an entry under its session key; else defaults.
func Allowed(grantsJSON []byte, senderMemberPubkey, senderSessionPubkey, capability string) bool {
	return allowed(parseGrants(grantsJSON), senderMemberPubkey, senderSessionPubkey, capability)
}

func parseGrants(grantsJSON []byte) map[string][]string {
	var grants map[string][]string
	if len(grantsJSON) > 0 {
		if err := json.Unmarshal(grantsJSON, &grants); err != nil {
			grants = nil // unreadable grants fall back to the defaults, as an absent entry would
		}
	}
	return grants
}

func allowed(grants map[string][]string, senderMemberPubkey, senderSessionPubkey, capability string) bool {
	caps, ok := grants[senderMemberPubkey]
	if !ok && senderSessionPubkey != "" {
		caps, ok = grants[senderSessionPubkey]
	}
	if !ok {
		caps = DefaultCaps
	}
	return slices.Contains(caps, capability)
}

// InGroup reports whether a presence's groups (JSON [{name, role?}]) put it in group g:
// a member of a/b/c is in @a/b/c, @a/b and @a.
func InGroup(groupsJSON []byte, g string) bool { return inGroup(parseGroups(groupsJSON), g) }

func parseGroups(groupsJSON []byte) []string {
	var groups []struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(groupsJSON, &groups) != nil {
		return nil
	}
	names := make([]string, len(groups))
	for i, gr := range groups {
		names[i] = gr.Name
	}
	return names
}

func inGroup(names []string, g string) bool {
	for _, n := range names {
		if n == g || strings.HasPrefix(n, g+"/") {
			return true
		}
	}
	return false
}

// LogEntry is what decides a broadcast or group message's scope.
type LogEntry struct {
	SenderMemberID      string
	SenderMemberPubkey  string
	SenderSessionPubkey string
	TargetKind          string // "broadcast" or "group"
	TargetSpec          string
}

// LogReader is a presence reading its mesh's log, as it is now: its groups and its
// member's grants parsed once for all the entries it reads.
type LogReader struct {
	memberID string
	visible  bool
	groups   []string
	grants   map[string][]string
}

// NewLogReader builds a reader from a presence's member, visibility, groups (JSON [{name,
// role?}]) and its member's peer_grants (JSON).
func NewLogReader(memberID string, visible bool, groupsJSON, grantsJSON []byte) LogReader {
	return LogReader{memberID: memberID, visible: visible, groups: parseGroups(groupsJSON), grants: parseGrants(grantsJSON)}
}

// Reaches decides, per recipient and at delivery time, whether a log entry is for a
// presence: visible, not of the sender's member, in the group (for a group message: a
// member of a/b is in @a), and its member's grants allow the sender "broadcast".
// byGrant reports a refusal by grants alone (broker_messages_dropped_by_grant_total).
func (r LogReader) Reaches(e LogEntry) (ok, byGrant bool) {
	if !r.visible || r.memberID == e.SenderMemberID {
		return false, false
	}
	if e.TargetKind == "group" && (len(e.TargetSpec) < 2 || !inGroup(r.groups, e.TargetSpec[1:])) {
		return false, false
	}
	if !allowed(r.grants, e.SenderMemberPubkey, e.SenderSessionPubkey, "broadcast") {
		return false, true
	}
	return true, false
}
