package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/internal/api"
)

func isLoginRoute(p string) bool {
	return strings.HasPrefix(p, "/cli/device-code") || p == "/cli/token" || strings.HasPrefix(p, "/cli/session") || p == "/cli-sync"
}

// Every login route is documented, and those open to anyone that write are bounded per IP.
// Each writing route, called without its credential and with another user's bearer,
// changes nothing (the device-code start, open by design, aside).
func TestLoginRoutesRefuseWithoutCredential(t *testing.T) {
	var a *api.API
	e := newEnv(t, nil)
	_, otherTok := e.user("other@example.com")
	start := e.startLogin(nil)
	counts := func() string {
		var s string
		if err := e.d.Pool.QueryRow(context.Background(), `SELECT concat_ws(' ',
			(SELECT count(*) FROM users), (SELECT count(*) FROM cli_sessions WHERE revoked_at IS NULL),
			(SELECT string_agg(status, ',' ORDER BY id) FROM device_codes), (SELECT count(*) FROM members),
			(SELECT count(*) FROM cli_sync_jtis))`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := counts()
	n := 0
	for _, rt := range a.Routes() {
		if !isLoginRoute(rt.Pattern) {
			continue
		}
		n++
		if rt.Doc == "" || rt.Handler == nil {
			t.Errorf("%s %s: no Doc or handler", rt.Method, rt.Pattern)
		}
		if rt.Auth == api.AuthNone && rt.Writes && !rt.IPLimited {
			t.Errorf("%s %s: open and writing but not IP-limited", rt.Method, rt.Pattern)
		}
		if !rt.Writes || rt.Auth == api.AuthNone {
			continue
		}
		path := strings.NewReplacer("{code}", str(start, "session_id")).Replace(rt.Pattern)
		if rt.Method == "GET" {
			path = strings.NewReplacer("{code}", "not-the-device-code").Replace(rt.Pattern)
		}
		body := map[string]any{"user_id": "victim", "email": "victim@example.com", "session_id": "x",
			"sync_token": "x.y.z", "peer_pubkey": strings.Repeat("ab", 32), "display_name": "x"}
		for _, tok := range []string{"", otherTok} {
			r := e.call(rt.Method, path, tok, body)
			if r.Status >= 500 {
				t.Errorf("%s %s: %d %s", rt.Method, path, r.Status, r.Raw)
			}
		}
		if after := counts(); after != before {
			t.Errorf("%s %s without its credential changed the database: %s -> %s", rt.Method, rt.Pattern, before, after)
		}
	}
	if n != 7 {
		t.Fatalf("%d login routes, want 7", n)
	}
}
