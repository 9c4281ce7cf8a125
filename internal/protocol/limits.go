package protocol

import (
	"fmt"
	"unicode/utf8"
)

// Bounds on what a member can make the broker store and show to its peers. Every field a
// peer sets is stored in its presence (and its peer state) and sent to every other peer of
// the mesh in list_peers and the presence events, so each is capped in bytes (UTF-8), and
// lists in count. docs/security.md lists them; a frame over a bound is refused whole with an
// error frame (code too_large) naming the field, or, in a hello, with malformed.
const (
	MaxDisplayNameBytes = 128
	MaxSummaryBytes     = 1024
	// MaxCwdBytes: hooks match presences by cwd, so it is stored whole and indexed, and a
	// btree entry holds at most 2 704 bytes (a longer random cwd failed the insert).
	MaxCwdBytes             = 2048
	MaxSessionIDBytes       = 256
	MaxHostnameBytes        = 255
	MaxModelBytes           = 256 // model ids can be long: a Bedrock inference-profile ARN
	MaxShortFieldBytes      = 64  // peerType, channel, one capability
	MaxCapabilities         = 32  // hello capabilities, and profile capabilities
	MaxGroups               = 32
	MaxGroupNameBytes       = 64
	MaxGroupRoleBytes       = 32
	MaxAvatarBytes          = 512
	MaxTitleBytes           = 128
	MaxBioBytes             = 1024
	MaxStatsKeys            = 16
	MaxStatsKeyBytes        = 32
	MaxStatsValueBytes      = 32 // a JSON number's text
	MaxMemberIDBytes        = 64
	MaxMessageIDsPerAck     = 1024 // client_ack messageIds
	MaxClientMessageIDBytes = 128
)

// BoundsError describes the first field over its bound ("cwd is 5000 bytes; the limit is
// 4096"), or is "" when every field is within bounds.
type BoundsError string

func tooLong(field string, n, limit int) BoundsError {
	return BoundsError(fmt.Sprintf("%s is %d bytes; the limit is %d", field, n, limit))
}

func tooMany(field string, n, limit int) BoundsError {
	return BoundsError(fmt.Sprintf("%s has %d entries; the limit is %d", field, n, limit))
}

// checkLen is tooLong when s is longer than limit.
func checkLen(field, s string, limit int) BoundsError {
	if len(s) > limit {
		return tooLong(field, len(s), limit)
	}
	return ""
}

func firstBad(errs ...BoundsError) BoundsError {
	for _, e := range errs {
		if e != "" {
			return e
		}
	}
	return ""
}

// CheckGroups bounds a list of group memberships: count, and each name (non-empty) and role.
func CheckGroups(field string, gs []Group) BoundsError {
	if len(gs) > MaxGroups {
		return tooMany(field, len(gs), MaxGroups)
	}
	for _, g := range gs {
		if e := CheckGroup(field, g); e != "" {
			return e
		}
	}
	return ""
}

// CheckGroup bounds one group membership.
func CheckGroup(field string, g Group) BoundsError {
	if g.Name == "" {
		return BoundsError(field + " has a group with an empty name")
	}
	return firstBad(checkLen(field+" name", g.Name, MaxGroupNameBytes), checkLen(field+" role", g.Role, MaxGroupRoleBytes))
}

func checkList(field string, xs []string, count, each int) BoundsError {
	if len(xs) > count {
		return tooMany(field, len(xs), count)
	}
	for _, x := range xs {
		if e := checkLen(field+" entry", x, each); e != "" {
			return e
		}
	}
	return ""
}

// Bounds checks the hello fields that identify or match a session (a cut one would match
// the wrong thing, so one over its bound refuses the hello). The informational fields are
// cut to their bounds instead, by CutInformational.
func (h *Hello) Bounds() BoundsError {
	return firstBad(
		checkLen("memberId", h.MemberID, MaxMemberIDBytes),
		checkLen("sessionId", h.SessionID, MaxSessionIDBytes),
		checkLen("cwd", h.Cwd, MaxCwdBytes),
		checkList("capabilities", h.Capabilities, MaxCapabilities, MaxShortFieldBytes),
		CheckGroups("groups", h.Groups),
	)
}

// CutInformational cuts the hello's informational fields (shown to peers, matched by
// nothing, not signed) to their bounds: a client with a long model id or host name still
// connects.
func (h *Hello) CutInformational() {
	h.DisplayName = TruncateUTF8(h.DisplayName, MaxDisplayNameBytes)
	h.Hostname = TruncateUTF8(h.Hostname, MaxHostnameBytes)
	h.PeerType = TruncateUTF8(h.PeerType, MaxShortFieldBytes)
	h.Channel = TruncateUTF8(h.Channel, MaxShortFieldBytes)
	h.Model = TruncateUTF8(h.Model, MaxModelBytes)
}

// Bounds checks set_summary.
func (s *SetSummary) Bounds() BoundsError { return checkLen("summary", s.Summary, MaxSummaryBytes) }

// Bounds checks set_profile.
func (p *SetProfile) Bounds() BoundsError {
	str := func(field string, v *string, limit int) BoundsError {
		if v == nil {
			return ""
		}
		return checkLen(field, *v, limit)
	}
	return firstBad(
		str("avatar", p.Avatar, MaxAvatarBytes), str("title", p.Title, MaxTitleBytes), str("bio", p.Bio, MaxBioBytes),
		checkList("capabilities", p.Capabilities, MaxCapabilities, MaxShortFieldBytes),
	)
}

// Bounds checks set_stats.
func (s *SetStats) Bounds() BoundsError {
	if len(s.Stats) > MaxStatsKeys {
		return tooMany("stats", len(s.Stats), MaxStatsKeys)
	}
	for k, v := range s.Stats {
		if e := firstBad(checkLen("stats key", k, MaxStatsKeyBytes), checkLen("stats value", string(v), MaxStatsValueBytes)); e != "" {
			return e
		}
	}
	return ""
}

// Bounds checks join_group (the count of groups is checked against the presence's groups).
func (j *JoinGroup) Bounds() BoundsError {
	return CheckGroup("group", Group{Name: j.Name, Role: j.Role})
}

// Bounds checks client_ack.
func (a *ClientAck) Bounds() BoundsError {
	if len(a.MessageIDs) > MaxMessageIDsPerAck {
		return tooMany("messageIds", len(a.MessageIDs), MaxMessageIDsPerAck)
	}
	return ""
}

// TruncateUTF8 cuts s to at most n bytes without splitting a character (for restoring
// state saved before these bounds existed).
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
