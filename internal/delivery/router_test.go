package delivery

import "testing"

// The reference's grants-enforcement cases.
func TestAllowed(t *testing.T) {
	const memberK, sessK = "mk", "sk"
	cases := []struct {
		name              string
		grants            string
		session           string
		wantDM, wantBcast bool
	}{
		{"no entry: defaults allow dm and broadcast", `{}`, sessK, true, true},
		{"explicit member entry wins over defaults", `{"mk":["read"]}`, sessK, false, false},
		{"empty list for the member key blocks", `{"mk":[]}`, sessK, false, false},
		{"falls back to the session key when the member key is absent", `{"sk":["dm"]}`, sessK, true, false},
		{"member entry always wins over a session entry", `{"mk":[],"sk":["dm","broadcast"]}`, sessK, false, false},
		{"session fallback only with a session key", `{"sk":[]}`, "", true, true},
		{"unreadable grants fall back to defaults", `not json`, sessK, true, true},
	}
	for _, c := range cases {
		if got := Allowed([]byte(c.grants), memberK, c.session, "dm"); got != c.wantDM {
			t.Errorf("%s: dm = %v", c.name, got)
		}
		if got := Allowed([]byte(c.grants), memberK, c.session, "broadcast"); got != c.wantBcast {
			t.Errorf("%s: broadcast = %v", c.name, got)
		}
	}
}

func TestTargetKind(t *testing.T) {
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF"
	for spec, want := range map[string]string{
		"*": "broadcast", "@all": "broadcast", "@ops": "group", "@a/b": "group", hex: "direct",
		"@": "", "#channel": "", "tag:x": "", "alice": "", hex[:16]: "", "": "",
	} {
		if got := TargetKind(spec); got != want {
			t.Errorf("TargetKind(%q) = %q, want %q", spec, got, want)
		}
	}
}

func TestInGroup(t *testing.T) {
	groups := []byte(`[{"name":"a/b/c"},{"name":"ops","role":"lead"}]`)
	for g, want := range map[string]bool{"a/b/c": true, "a/b": true, "a": true, "a/b/c/d": false, "ops": true, "op": false, "b": false} {
		if got := InGroup(groups, g); got != want {
			t.Errorf("InGroup(@%s) = %v", g, got)
		}
	}
}

// Who a log entry reaches, decided per recipient when it reads the log.
func TestReaches(t *testing.T) {
	bcast := LogEntry{SenderMemberID: "alice", SenderMemberPubkey: "ak", TargetKind: "broadcast", TargetSpec: "*"}
	group := func(g string) LogEntry { e := bcast; e.TargetKind, e.TargetSpec = "group", g; return e }
	type reader struct {
		member  string
		visible bool
		groups  string
		grants  string
	}
	bob := reader{"bob", true, `[{"name":"ops/db"}]`, `{}`}
	with := func(f func(*reader)) reader { r := bob; f(&r); return r }
	cases := []struct {
		name        string
		e           LogEntry
		r           reader
		ok, byGrant bool
	}{
		{"broadcast to another member", bcast, bob, true, false},
		{"not to the sender's own member", bcast, with(func(r *reader) { r.member = "alice" }), false, false},
		{"not to a hidden presence", bcast, with(func(r *reader) { r.visible = false }), false, false},
		{"group: exact name", group("@ops/db"), bob, true, false},
		{"group: a parent reaches its subgroups", group("@ops"), bob, true, false},
		{"group: not a sibling", group("@ops/web"), bob, false, false},
		{"group: not a name prefix that is no parent", group("@op"), bob, false, false},
		{"grants without broadcast block", bcast, with(func(r *reader) { r.grants = `{"ak":["dm"]}` }), false, true},
		{"grants block a group message too", group("@ops"), with(func(r *reader) { r.grants = `{"ak":[]}` }), false, true},
		{"out of the group is not a grant refusal", group("@web"), with(func(r *reader) { r.grants = `{"ak":[]}` }), false, false},
	}
	for _, c := range cases {
		r := NewLogReader(c.r.member, c.r.visible, []byte(c.r.groups), []byte(c.r.grants))
		if ok, byGrant := r.Reaches(c.e); ok != c.ok || byGrant != c.byGrant {
			t.Errorf("%s: Reaches = %v, %v; want %v, %v", c.name, ok, byGrant, c.ok, c.byGrant)
		}
	}
}
