package protocol

// Error codes sent as {"type":"error","code":…}. Stable: clients match on them.
const (
	// Hello rejections, in the order they are checked (PROTOCOL.md §3). Each is also the
	// close reason of the 1008 close that follows.
	CodeBadSessionPubkey = "bad_session_pubkey"
	CodeCapacity         = "capacity"
	CodeTimestampSkew    = "timestamp_skew"
	CodeMalformed        = "malformed"
	CodeBadSignature     = "bad_signature"
	CodeUnauthorized     = "unauthorized"
	CodeBadSessionProof  = "bad_session_proof"
	CodeReplayed         = "replayed"

	// Session errors; the socket stays open.
	CodeNoHello              = "no_hello"
	CodeAlreadyAuthenticated = "already_authenticated"
	CodeNotFound             = "not_found"
	CodeAuditQueryError      = "audit_query_error"
	CodeAuditVerifyError     = "audit_verify_error"
	CodeInternal             = "internal"
	// CodeTooLarge: a field or list over its bound (protocol limits.go); nothing was changed.
	CodeTooLarge = "too_large"
	// CodeRateLimit: more requests than the session's control budget; the frame was dropped.
	CodeRateLimit = "rate_limit"
	// CodeInvalid: a request whose values are not acceptable (an unknown status, …).
	CodeInvalid = "invalid"
)

// WebSocket close codes the broker uses.
const (
	CloseNormal          = 1000 // reason session_replaced: another socket took this identity over
	CloseGoingAway       = 1001 // the instance is draining: reconnect (to another instance)
	CloseInvalidPayload  = 1007 // a text frame that is not valid UTF-8
	ClosePolicyViolation = 1008 // hello refused (the reason is the error code), or member revoked (unauthorized)
	CloseMessageTooBig   = 1009 // frame above MAX_MESSAGE_BYTES (or the pre-hello cap)
	CloseTryAgainLater   = 1013 // the broker could not serve the socket (database down, slow client)
	// CloseRevoked: the member was revoked (newer claudemesh CLIs stop reconnecting on it).
	CloseRevoked = 4002
	// CloseKicked: this one session was ended by its member or an admin (no reconnect).
	CloseKicked = 4001
)

// Close reasons.
const (
	ReasonSessionReplaced = "session_replaced"
	ReasonShuttingDown    = "shutting down"
	ReasonHandshakeTimout = "handshake_timeout"
	ReasonSlowConsumer    = "slow_consumer"
	ReasonRevoked         = "revoked"
	ReasonKicked          = "kicked"
	ReasonMeshDeleted     = "mesh_deleted" // with CloseRevoked: the mesh was archived
)

// IsHex reports whether s is n hex digits in either case (keys and signatures as sent).
func IsHex(s string, n int) bool { return isHexDigits(s, n, true) }

// IsLowerHex reports whether s is n lower-case hex digits (how session keys must be sent).
func IsLowerHex(s string, n int) bool { return isHexDigits(s, n, false) }

func isHexDigits(s string, n int, upperOK bool) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || upperOK && c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
