// Package auth verifies who a peer is: the ed25519-signed hello (PROTOCOL.md §3) with the
// session-key proof and replay refusal. The checks run in the contract's order and each
// failure is one stable code; the database-backed steps (capacity, membership, replay
// memory) go through the Store interface so the same logic serves every instance.
//
// Everything here is safe for concurrent use.
package auth

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Skew is the largest accepted difference between a hello's timestamp and the broker clock.
const Skew = 60 * time.Second

// ReplayWindow is how long an accepted hello signature is remembered. It covers the whole
// ±Skew window, so a captured hello can never be replayed.
const ReplayWindow = 2 * time.Minute

// Member is the authenticated member a hello resolved to, with what the session's
// hello_ack needs about it (read in the same lookup, so a hello costs one read).
type Member struct {
	ID          string
	MeshID      string
	Pubkey      string
	DisplayName string
	Role        string

	RoleTag       *string
	DefaultGroups []byte // jsonb array
	MessageMode   string
	MeshPolicy    []byte      // the mesh's self_editable policy (jsonb)
	Saved         *SavedState // what the member's last session left; nil when nothing
}

// SavedState is a member's peer state, restored into a new session (hello_ack restore).
type SavedState struct {
	Groups     []byte // jsonb
	Profile    []byte // jsonb
	Visible    bool
	Summary    *string
	LastSeenAt *time.Time
	Stats      []byte // jsonb
}

// Facts is what one database lookup tells verification.
type Facts struct {
	// LivePresences counts the mesh's live presences on every instance, except the one of
	// the connecting identity (which a reconnect takes over). Zero when not asked for.
	LivePresences int64
	// Member is the non-revoked member with the hello's pubkey in the non-archived mesh,
	// when Found.
	Member Member
	Found  bool

	// IdentityOwner is the member whose live presence has the hello's identity ("" when the
	// identity has none), and IdentityProven whether that presence's key was proven.
	IdentityOwner  string
	IdentityProven bool
	// SessionKeyTaken: a presence of another member (live or ended) announced the hello's
	// session key. SessionKeyIsMemberKey: the session key is another member's key.
	// SessionIDTaken: a live presence of another member has the hello's sessionId.
	SessionKeyTaken       bool
	SessionKeyIsMemberKey bool
	SessionIDTaken        bool
}

// Store is what verification needs from the database.
type Store interface {
	// Lookup reads the Facts for a hello in one go; countPresences=false skips the mesh count.
	Lookup(ctx context.Context, h *protocol.Hello, countPresences bool) (Facts, error)
	// RememberSignature records an accepted hello signature until expires; fresh=false when
	// it was already recorded (a replay).
	RememberSignature(ctx context.Context, signature, meshID string, expires time.Time) (fresh bool, err error)
}

// Rejection is a refused hello: the code (also the close reason) and a human message.
type Rejection struct {
	Code    string
	Message string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

func reject(code, msg string) *Rejection { return &Rejection{Code: code, Message: msg} }

// Options tune verification. A limit <= 0 is no limit. (The member's own session limits
// are counted where the presence is created, under the mesh's lock: see InsertPresence.)
type Options struct {
	MaxPresencesPerMesh int64
	RequireSessionProof bool
	// MemberHello, when set, is asked once a hello passed every check and before its
	// presence is written; false refuses it (MsgMemberHellos): a member's hello budget.
	MemberHello func(memberID string) bool
	// KnownFull reports whether this instance found the mesh at capacity moments ago. A
	// hello that fails a check needing no database (3–5) is refused without a query; when
	// its mesh is known to be full it is refused capacity instead, as check 2 comes first.
	KnownFull func(meshID string) bool
}

// Messages of the capacity and ownership refusals.
const (
	MsgMeshFull        = "mesh at connection capacity"
	MsgMemberFull      = "member at session capacity: close a session or wait for a dropped one's grace window to end"
	MsgMemberTooFast   = "member opened too many sessions in the last minute; retry later"
	MsgNotFound        = "pubkey not found in mesh"
	MsgSessionKeyTaken = "sessionPubkey belongs to another member's session"
	MsgSessionKeyIsKey = "sessionPubkey is another member's key"
	MsgSessionIDTaken  = "sessionId belongs to another member's session"
	MsgProofRequired   = "sessionSig required: this session key was proven, only a hello proving it again may take it over"
	MsgMemberHellos    = "member sent too many hellos; retry later"
)

// VerifyHello runs every hello check in PROTOCOL.md §3's order: Precheck, then Authorize.
// It returns the member, or a *Rejection, or another error when the database failed (the
// caller answers that with a retryable close, not a rejection code).
func VerifyHello(ctx context.Context, st Store, h *protocol.Hello, now time.Time, opt Options) (Member, error) {
	if rej := Precheck(h, now, opt); rej != nil {
		return Member{}, rej
	}
	return Authorize(ctx, st, h, now, opt)
}

// Precheck runs the checks that need no database: the session key's format (1), the
// timestamp (3), the format and bounds of the fields (4) and the signature (5). A hello
// that fails one costs no query — a stranger's forged hellos cannot load the database —
// and is refused with that check's code, or with capacity (check 2) when Options.KnownFull
// says the mesh was just found full.
func Precheck(h *protocol.Hello, now time.Time, opt Options) *Rejection {
	// 1. session key format
	if h.SessionPubkey != "" && !protocol.IsLowerHex(h.SessionPubkey, 64) {
		return reject(protocol.CodeBadSessionPubkey, "sessionPubkey must be 64 lowercase hex chars")
	}
	var rej *Rejection
	switch {
	// 3. timestamp
	case !h.HasTimestamp || !withinSkew(now, h.Timestamp):
		rej = reject(protocol.CodeTimestampSkew, "hello rejected: timestamp_skew")
	// 4. format, and the bounds of what the presence stores
	case !protocol.IsHex(h.Pubkey, 64) || !protocol.IsHex(h.Signature, 128) || h.SessionID == "" || h.MeshID == "":
		rej = reject(protocol.CodeMalformed, "hello rejected: malformed")
	case h.Bounds() != "":
		rej = reject(protocol.CodeMalformed, "hello rejected: malformed ("+string(h.Bounds())+")")
	// 5. signature
	case !verify(h.Pubkey, h.Signature, CanonicalHello(h.MeshID, h.MemberID, h.Pubkey, h.Timestamp)):
		rej = reject(protocol.CodeBadSignature, "hello rejected: bad_signature")
	}
	if rej != nil && opt.KnownFull != nil && opt.KnownFull(h.MeshID) {
		return reject(protocol.CodeCapacity, MsgMeshFull)
	}
	return rej
}

// Authorize runs the checks that read the database, for a hello that passed Precheck:
// the mesh's capacity (2), membership and session ownership (6), the session-key proof (7)
// and replay (8).
func Authorize(ctx context.Context, st Store, h *protocol.Hello, now time.Time, opt Options) (Member, error) {
	facts, err := st.Lookup(ctx, h, opt.MaxPresencesPerMesh > 0)
	if err != nil {
		return Member{}, err
	}
	m := facts.Member
	takeover := facts.Found && facts.IdentityOwner == m.ID
	// 2. capacity, across all instances (a takeover of the identity's own presence is not
	// counted: LivePresences leaves it out).
	if opt.MaxPresencesPerMesh > 0 && facts.LivePresences >= opt.MaxPresencesPerMesh {
		return Member{}, reject(protocol.CodeCapacity, MsgMeshFull)
	}
	// 6. membership, then the session identity: a session key, a sessionId and a live
	// presence belong to the member that created them.
	if !facts.Found || (h.MemberID != "" && h.MemberID != m.ID) {
		return Member{}, reject(protocol.CodeUnauthorized, MsgNotFound)
	}
	switch {
	case facts.SessionKeyIsMemberKey:
		return Member{}, reject(protocol.CodeUnauthorized, MsgSessionKeyIsKey)
	case facts.SessionKeyTaken || (facts.IdentityOwner != "" && !takeover):
		return Member{}, reject(protocol.CodeUnauthorized, MsgSessionKeyTaken)
	case facts.SessionIDTaken:
		return Member{}, reject(protocol.CodeUnauthorized, MsgSessionIDTaken)
	}
	// 7. session key proof
	if h.SessionSig != "" || opt.RequireSessionProof {
		if h.SessionSig == "" || h.SessionPubkey == "" || !protocol.IsHex(h.SessionSig, 128) ||
			!verify(h.SessionPubkey, h.SessionSig, CanonicalSessionProof(h.MeshID, h.Pubkey, h.SessionPubkey, h.Timestamp)) {
			return Member{}, reject(protocol.CodeBadSessionProof, "sessionSig does not prove sessionPubkey")
		}
	}
	if takeover && facts.IdentityProven && h.SessionSig == "" {
		return Member{}, reject(protocol.CodeBadSessionProof, MsgProofRequired)
	}
	// 8. replay, remembered across instances
	fresh, err := st.RememberSignature(ctx, normalizeHex(h.Signature), h.MeshID, now.Add(ReplayWindow))
	if err != nil {
		return Member{}, err
	}
	if !fresh {
		return Member{}, reject(protocol.CodeReplayed, "hello rejected: replayed")
	}
	// The member's hello budget, before the presence is written: after the replay check, so
	// a captured hello replayed cannot spend the member's budget.
	if opt.MemberHello != nil && !opt.MemberHello(m.ID) {
		return Member{}, reject(protocol.CodeCapacity, MsgMemberHellos)
	}
	return m, nil
}

// IdentityKey is the stable identity a hello's presence belongs to (PROTOCOL.md §3): the
// session key, else the member and its Claude Code session id.
func IdentityKey(memberID string, h *protocol.Hello) string {
	if h.SessionPubkey != "" {
		return "s:" + h.SessionPubkey
	}
	return "m:" + memberID + ":" + h.SessionID
}

// CanonicalHello is the string a member signs: meshId|memberId|pubkey|timestamp.
func CanonicalHello(meshID, memberID, pubkey string, timestampMs int64) string {
	return meshID + "|" + memberID + "|" + pubkey + "|" + strconv.FormatInt(timestampMs, 10)
}

// CanonicalSessionProof is the string a session key signs to prove itself:
// claudemesh-session|meshId|pubkey|sessionPubkey|timestamp.
func CanonicalSessionProof(meshID, pubkey, sessionPubkey string, timestampMs int64) string {
	return "claudemesh-session|" + meshID + "|" + pubkey + "|" + sessionPubkey + "|" + strconv.FormatInt(timestampMs, 10)
}

// Sign returns the hex detached signature of msg (used by clients: tests, the load tool).
func Sign(secret ed25519.PrivateKey, msg string) string {
	return hex.EncodeToString(ed25519.Sign(secret, []byte(msg)))
}

func verify(pubHex, sigHex, msg string) bool {
	pub, err1 := hex.DecodeString(pubHex)
	sig, err2 := hex.DecodeString(sigHex)
	if err1 != nil || err2 != nil || len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, []byte(msg), sig)
}

// normalizeHex lower-cases a hex signature so the same signature in another case is still
// recognised as a replay.
func normalizeHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// withinSkew compares in integer milliseconds: a time.Duration between now and a timestamp
// far in the future saturates, and its absolute value stays negative (a hello dated 2^53 ms
// passed the check, and could be replayed once the replay memory forgot it).
func withinSkew(now time.Time, timestampMs int64) bool {
	diff := now.UnixMilli() - timestampMs // the decoder keeps timestamps within ±2^53: no overflow
	return diff <= Skew.Milliseconds() && diff >= -Skew.Milliseconds()
}
