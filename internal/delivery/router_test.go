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
