package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/clitoken"
)

// startLogin creates a device code with the given device fields and returns the answer.
func (e *env) startLogin(body any) reply {
	e.t.Helper()
	r := e.call("POST", "/cli/device-code", "", body)
	expect(e.t, r, http.StatusOK, "")
	return r
}

func str(r reply, k string) string {
	s, _ := r.Body[k].(string)
	return s
}

// The whole device-code login: start, poll pending, approval refused without a credential
// and for another user's bearer, approved by the web app, the bearer collected once and
// usable at once, the code consumed afterwards and its bearer no longer on the row.
func TestDeviceCodeLogin(t *testing.T) {
	e := newEnv(t, map[string]string{"APP_URL": "https://app.example.com/"})
	start := e.startLogin(map[string]any{"hostname": "laptop", "platform": "darwin", "arch": "arm64"})
	dc, uc, sid := str(start, "device_code"), str(start, "user_code"), str(start, "session_id")
	if !regexp.MustCompile(`^[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{16}$`).MatchString(dc) ||
		!regexp.MustCompile(`^[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{4}-[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{4}$`).MatchString(uc) ||
		!regexp.MustCompile(`^clm_sess_[0-9A-Za-z]{32}$`).MatchString(sid) {
		t.Fatalf("codes: %s", start.Raw)
	}
	if str(start, "verification_url") != "https://app.example.com/cli-auth" || str(start, "token_url") != "https://app.example.com/token" {
		t.Fatalf("urls: %s", start.Raw)
	}
	exp, err := time.Parse(time.RFC3339, str(start, "expires_at"))
	if err != nil || !strings.HasSuffix(str(start, "expires_at"), "Z") || exp.Sub(time.Now()) < 4*time.Minute || exp.Sub(time.Now()) > 6*time.Minute {
		t.Fatalf("expires_at %q (%v)", str(start, "expires_at"), err)
	}
	var ip string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT ip_address FROM device_codes WHERE device_code = $1`, dc).Scan(&ip); err != nil || ip != "127.0.0.1" {
		t.Fatalf("stored ip %q %v", ip, err)
	}

	if r := e.call("GET", "/cli/device-code/"+dc, "", nil); r.Status != 200 || r.Body["status"] != "pending" {
		t.Fatalf("poll pending: %s", r.Raw)
	}
	approve := map[string]any{"user_id": "u-alice", "email": "alice@example.com", "name": "Alice"}
	expect(t, e.call("POST", "/cli/device-code/"+sid+"/approve", "", approve), http.StatusUnauthorized, "unauthorized")
	expect(t, e.call("POST", "/cli/device-code/"+sid+"/approve", "not-the-secret", approve), http.StatusUnauthorized, "invalid_or_revoked_token")
	_, bobToken := e.user("bob@example.com")
	expect(t, e.call("POST", "/cli/device-code/"+sid+"/approve", bobToken, approve), http.StatusForbidden, "forbidden")
	if r := e.call("GET", "/cli/device-code/"+dc, "", nil); r.Body["status"] != "pending" {
		t.Fatalf("refused approvals changed the code: %s", r.Raw)
	}

	r := e.call("POST", "/cli/device-code/"+sid+"/approve", appSecret, approve)
	expect(t, r, http.StatusOK, "")
	if r.Body["ok"] != true {
		t.Fatalf("approve: %s", r.Raw)
	}
	expect(t, e.call("POST", "/cli/device-code/"+sid+"/approve", appSecret, approve), http.StatusConflict, "Code already approved")

	r = e.call("GET", "/cli/device-code/"+dc, "", nil)
	token := str(r, "session_token")
	user, _ := r.Body["user"].(map[string]any)
	if r.Body["status"] != "approved" || !strings.HasPrefix(token, clitoken.Prefix) || len(token) != 46 ||
		user["id"] != "u-alice" || user["display_name"] != "Alice" || user["email"] != "alice@example.com" {
		t.Fatalf("poll approved: %s", r.Raw)
	}
	if r := e.call("GET", "/cli/device-code/"+dc, "", nil); r.Body["status"] != "consumed" || r.Body["session_token"] != nil {
		t.Fatalf("second poll: %s", r.Raw)
	}
	var stored *string
	var hash string
	if err := e.d.Pool.QueryRow(context.Background(),
		`SELECT d.session_token, c.token_hash FROM device_codes d JOIN cli_sessions c ON c.device_code_id = d.id WHERE d.device_code = $1`, dc).
		Scan(&stored, &hash); err != nil || stored != nil || hash != clitoken.Hash(token) {
		t.Fatalf("row after collection: token %v, hash %s (%v)", stored, hash, err)
	}

	r = e.call("GET", "/cli/sessions", token, nil)
	expect(t, r, http.StatusOK, "")
	sessions, _ := r.Body["sessions"].([]any)
	if len(sessions) != 1 {
		t.Fatalf("sessions: %s", r.Raw)
	}
	s := sessions[0].(map[string]any)
	if s["hostname"] != "laptop" || s["platform"] != "darwin" || s["arch"] != "arm64" || s["label"] != nil ||
		s["id"] == "" || s["created_at"] == nil || s["last_seen_at"] == nil {
		t.Fatalf("session: %v", s)
	}
	var name, email string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT name, email FROM users WHERE id = 'u-alice'`).Scan(&name, &email); err != nil ||
		name != "Alice" || email != "alice@example.com" {
		t.Fatalf("user vouched by the app: %q %q %v", name, email, err)
	}
}

// A user's own bearer may approve a code for that user (found by user code, any case), and
// a display name falls back to the email.
func TestDeviceCodeApprovedByTheUsersBearer(t *testing.T) {
	e := newEnv(t, nil)
	uid, tok := e.user("carol@example.com")
	if _, err := e.d.Pool.Exec(context.Background(), `UPDATE users SET name = NULL WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	start := e.startLogin(nil)
	r := e.call("POST", "/cli/device-code/"+strings.ToLower(str(start, "user_code"))+"/approve", tok,
		map[string]any{"user_id": uid, "email": "changed@example.com", "name": "Mallory"})
	expect(t, r, http.StatusOK, "")
	r = e.call("GET", "/cli/device-code/"+str(start, "device_code"), "", nil)
	user, _ := r.Body["user"].(map[string]any)
	if r.Body["status"] != "approved" || user["display_name"] != "carol@example.com" || user["email"] != "carol@example.com" {
		t.Fatalf("poll: %s (a bearer must not change the account)", r.Raw)
	}
	expect(t, e.call("GET", "/cli/sessions", str(r, "session_token"), nil), http.StatusOK, "")
}

// Every refusal of the device-code routes, and expiry.
func TestDeviceCodeErrors(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	ok := map[string]any{"user_id": "u1", "email": "u1@example.com"}

	// Bad or absent bodies start a login anyway; over-long fields do not.
	for _, body := range []any{nil, "not json", `{"hostname": 5}`, `[1,2]`} {
		e.startLogin(body)
	}
	long := strings.Repeat("é", 201)
	for _, f := range []string{"hostname", "platform", "arch"} {
		expect(t, e.call("POST", "/cli/device-code", "", map[string]any{f: long}), 400, f+" longer than 200 characters")
	}

	start := e.startLogin(map[string]any{"hostname": strings.Repeat("é", 200)})
	sid, dc := str(start, "session_id"), str(start, "device_code")
	path := "/cli/device-code/" + sid + "/approve"
	expect(t, e.call("POST", path, appSecret, "{"), 400, "Invalid body")
	expect(t, e.call("POST", path, appSecret, nil), 400, "Invalid body")
	expect(t, e.call("POST", path, appSecret, map[string]any{"user_id": "u1"}), 400, "user_id and email required")
	expect(t, e.call("POST", path, appSecret, map[string]any{"email": "x@y"}), 400, "user_id and email required")
	expect(t, e.call("POST", path, appSecret, map[string]any{"user_id": "u1", "email": strings.Repeat("a", 321)}), 400, "email longer than 320 characters")
	expect(t, e.call("POST", path, appSecret, map[string]any{"user_id": "u1", "email": "a@b", "name": long}), 400, "name longer than 200 characters")
	expect(t, e.call("POST", path, appSecret, map[string]any{"user_id": long, "email": "a@b"}), 400, "user_id longer than 200 characters")
	expect(t, e.call("POST", "/cli/device-code/nope/approve", appSecret, ok), 404, "Code not found or expired")
	expect(t, e.call("POST", "/cli/device-code/"+dc+"/approve", appSecret, ok), 404, "Code not found or expired") // the device code is the CLI's secret, not an approval handle
	expect(t, e.call("POST", "/cli/device-code/"+strings.Repeat("A", 65)+"/approve", appSecret, ok), 404, "Code not found or expired")

	// Past its 5 minutes a code is refused 410 and marked expired.
	if _, err := e.d.Pool.Exec(ctx, `UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE session_id = $1`, sid); err != nil {
		t.Fatal(err)
	}
	expect(t, e.call("POST", path, appSecret, ok), 410, "Code expired")
	expect(t, e.call("POST", path, appSecret, ok), 410, "Code expired")
	if r := e.call("GET", "/cli/device-code/"+dc, "", nil); r.Body["status"] != "expired" {
		t.Fatalf("poll of an expired code: %s", r.Raw)
	}

	// A pending code past expiry is marked expired by the poll.
	p := e.startLogin(nil)
	if _, err := e.d.Pool.Exec(ctx, `UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE device_code = $1`, str(p, "device_code")); err != nil {
		t.Fatal(err)
	}
	if r := e.call("GET", "/cli/device-code/"+str(p, "device_code"), "", nil); r.Status != 200 || r.Body["status"] != "expired" {
		t.Fatalf("poll past expiry: %s", r.Raw)
	}
	var status string
	if err := e.d.Pool.QueryRow(ctx, `SELECT status FROM device_codes WHERE device_code = $1`, str(p, "device_code")).Scan(&status); err != nil || status != "expired" {
		t.Fatalf("status %q %v", status, err)
	}

	// An approved code nobody collected in time: expired, and its bearer revoked.
	p = e.startLogin(nil)
	expect(t, e.call("POST", "/cli/device-code/"+str(p, "session_id")+"/approve", appSecret, ok), 200, "")
	if _, err := e.d.Pool.Exec(ctx, `UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE device_code = $1`, str(p, "device_code")); err != nil {
		t.Fatal(err)
	}
	if r := e.call("GET", "/cli/device-code/"+str(p, "device_code"), "", nil); r.Body["status"] != "expired" || r.Body["session_token"] != nil {
		t.Fatalf("poll of an uncollected approval: %s", r.Raw)
	}
	var live int
	if err := e.d.Pool.QueryRow(ctx, `SELECT count(*) FROM cli_sessions c JOIN device_codes d ON d.id = c.device_code_id
		WHERE d.device_code = $1 AND c.revoked_at IS NULL`, str(p, "device_code")).Scan(&live); err != nil || live != 0 {
		t.Fatalf("uncollected bearer still live: %d %v", live, err)
	}

	for _, code := range []string{"unknown", strings.Repeat("x", 65)} {
		if r := e.call("GET", "/cli/device-code/"+code, "", nil); r.Status != 200 || r.Body["status"] != "expired" {
			t.Fatalf("poll of %q: %s", code, r.Raw)
		}
	}
}

// Open logins are capped across the fleet, and per client IP.
func TestDeviceCodeCaps(t *testing.T) {
	e := newEnv(t, map[string]string{"API_IP_RATE_LIMIT_PER_MIN": "3"})
	if _, err := e.d.Pool.Exec(context.Background(), `INSERT INTO device_codes (id, device_code, user_code, session_id, expires_at)
		SELECT 'id'||i, 'dc'||i, 'uc'||i, 'sid'||i, now() + interval '5 minutes' FROM generate_series(1, 9999) i`); err != nil {
		t.Fatal(err)
	}
	e.startLogin(nil) // the 10 000th
	r := e.call("POST", "/cli/device-code", "", nil)
	expect(t, r, http.StatusServiceUnavailable, "Too many logins in progress, try again later")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// Expired codes do not count.
	if _, err := e.d.Pool.Exec(context.Background(), `UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE id = 'id1'`); err != nil {
		t.Fatal(err)
	}
	e.startLogin(nil)
	expect(t, e.call("POST", "/cli/device-code", "", nil), http.StatusTooManyRequests, "rate limited")
}

// Ten concurrent polls of an approved code: exactly one gets the bearer; concurrent
// approvals of one code mint one token.
func TestDeviceCodeConcurrency(t *testing.T) {
	e := newEnv(t, nil)
	start := e.startLogin(nil)
	approve := map[string]any{"user_id": "u-dan", "email": "dan@example.com"}
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = callAt(t, e.inst.HTTP, "POST", "/cli/device-code/"+str(start, "session_id")+"/approve", appSecret, approve).Status
		}()
	}
	wg.Wait()
	if fmt.Sprint(countOf(codes, 200), countOf(codes, 409)) != "1 4" {
		t.Fatalf("concurrent approvals answered %v", codes)
	}
	var minted int
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT count(*) FROM cli_sessions WHERE user_id = 'u-dan'`).Scan(&minted); err != nil || minted != 1 {
		t.Fatalf("approvals minted %d tokens (%v)", minted, err)
	}

	tokens := make([]string, 10)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := callAt(t, e.inst.HTTP, "GET", "/cli/device-code/"+str(start, "device_code"), "", nil)
			tokens[i] = str(r, "session_token")
		}()
	}
	wg.Wait()
	got := 0
	for _, tok := range tokens {
		if tok != "" {
			got++
		}
	}
	if got != 1 {
		t.Fatalf("%d of 10 concurrent polls got the bearer", got)
	}
}

func countOf(xs []int, v int) int {
	n := 0
	for _, x := range xs {
		if x == v {
			n++
		}
	}
	return n
}

// POST /cli/token mints a bearer only for the web app or a bearer of the same user.
func TestCliToken(t *testing.T) {
	e := newEnv(t, nil)
	body := map[string]any{"user_id": "u-eve", "email": "eve@example.com", "name": "Eve"}
	expect(t, e.call("POST", "/cli/token", "", body), http.StatusUnauthorized, "unauthorized")
	expect(t, e.call("POST", "/cli/token", "", "{"), http.StatusUnauthorized, "unauthorized")
	expect(t, e.call("POST", "/cli/token", "guess", body), http.StatusUnauthorized, "invalid_or_revoked_token")
	_, other := e.user("other@example.com")
	expect(t, e.call("POST", "/cli/token", other, body), http.StatusForbidden, "forbidden")
	var n int
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users WHERE id = 'u-eve'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused requests created the user: %d %v", n, err)
	}
	expect(t, e.call("POST", "/cli/token", appSecret, "{"), 400, "Invalid body")
	expect(t, e.call("POST", "/cli/token", appSecret, map[string]any{"user_id": "u-eve"}), 400, "user_id and email required")
	expect(t, e.call("POST", "/cli/token", appSecret, map[string]any{"user_id": "u-eve", "email": "e@x", "hostname": strings.Repeat("h", 201)}),
		400, "hostname longer than 200 characters")

	r := e.call("POST", "/cli/token", appSecret, body)
	expect(t, r, 200, "")
	tok := str(r, "token")
	r = e.call("GET", "/cli/sessions", tok, nil)
	sessions, _ := r.Body["sessions"].([]any)
	if len(sessions) != 1 {
		t.Fatalf("sessions %s", r.Raw)
	}
	if s := sessions[0].(map[string]any); s["hostname"] != "paste-token" || s["platform"] != "unknown" || s["arch"] != "unknown" {
		t.Fatalf("defaults: %v", s)
	}
	// The user's own bearer mints another, with its device.
	r = e.call("POST", "/cli/token", tok, map[string]any{"user_id": "u-eve", "email": "eve@example.com", "hostname": "box", "platform": "linux", "arch": "amd64"})
	expect(t, r, 200, "")
	r = e.call("GET", "/cli/sessions", str(r, "token"), nil)
	sessions, _ = r.Body["sessions"].([]any)
	if len(sessions) != 2 || sessions[1].(map[string]any)["hostname"] != "box" {
		t.Fatalf("second token, oldest first: %s", r.Raw)
	}
	// An email another user has is not taken over; the token is still minted.
	r = e.call("POST", "/cli/token", appSecret, map[string]any{"user_id": "u-frank", "email": "OTHER@example.com"})
	expect(t, r, 200, "")
	var email *string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT email FROM users WHERE id = 'u-frank'`).Scan(&email); err != nil || email != nil {
		t.Fatalf("taken email stored: %v %v", email, err)
	}
}

// Sessions are one's own; a revoked bearer is refused on its very next request; revoking
// by id needs a bearer and reaches only one's own sessions.
func TestSessionsAndRevoke(t *testing.T) {
	e := newEnv(t, nil)
	alice, aTok := e.user("alice@example.com")
	_, bTok := e.user("bob@example.com")
	expect(t, e.call("GET", "/cli/sessions", "", nil), 401, "missing_bearer_token")
	expect(t, e.call("GET", "/cli/sessions?user_id="+alice, "", nil), 401, "missing_bearer_token")
	expect(t, e.call("GET", "/cli/sessions", "nope", nil), 401, "invalid_or_revoked_token")
	r := e.call("GET", "/cli/sessions?user_id=someone-else", aTok, nil)
	sessions, _ := r.Body["sessions"].([]any)
	if len(sessions) != 1 {
		t.Fatalf("alice's sessions: %s", r.Raw)
	}
	aSession := sessions[0].(map[string]any)["id"].(string)

	expect(t, e.call("POST", "/cli/session/revoke", "", nil), 400, "token required")
	expect(t, e.call("POST", "/cli/session/revoke", "", map[string]any{"token": ""}), 400, "token required")
	expect(t, e.call("POST", "/cli/session/revoke", "", "{"), 400, "Invalid body")
	if r := e.call("POST", "/cli/session/revoke", "", map[string]any{"token": "unknown"}); r.Status != 200 || r.Body["found"] != false || r.Body["ok"] != true {
		t.Fatalf("unknown token: %s", r.Raw)
	}
	// By id: a bearer is needed, and another user's session is not found.
	expect(t, e.call("POST", "/cli/session/revoke", "", map[string]any{"session_id": aSession}), 401, "missing_bearer_token")
	if r := e.call("POST", "/cli/session/revoke", bTok, map[string]any{"session_id": aSession}); r.Body["found"] != false {
		t.Fatalf("bob revoked alice's session: %s", r.Raw)
	}
	expect(t, e.call("GET", "/cli/sessions", aTok, nil), 200, "")

	// By token: refused at once.
	if r := e.call("POST", "/cli/session/revoke", "", map[string]any{"token": aTok}); r.Body["found"] != true {
		t.Fatalf("revoke: %s", r.Raw)
	}
	expect(t, e.call("GET", "/cli/sessions", aTok, nil), 401, "invalid_or_revoked_token")
	if r := e.call("POST", "/cli/session/revoke", "", map[string]any{"token": aTok}); r.Body["found"] != false {
		t.Fatalf("second revoke: %s", r.Raw)
	}

	// Bob revokes his own session by id with his bearer.
	r = e.call("GET", "/cli/sessions", bTok, nil)
	bSession := r.Body["sessions"].([]any)[0].(map[string]any)["id"].(string)
	if r := e.call("POST", "/cli/session/revoke", bTok, map[string]any{"session_id": bSession}); r.Body["found"] != true {
		t.Fatalf("own revoke by id: %s", r.Raw)
	}
	expect(t, e.call("GET", "/cli/sessions", bTok, nil), 401, "invalid_or_revoked_token")
}

// BROKER_LEGACY_AUTH=1: GET /cli/sessions?user_id= answers with the deprecation headers and
// is counted; without the flag the same request is 401.
func TestLegacySessionsShim(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_LEGACY_AUTH": "1"})
	uid, _ := e.user("old@example.com")
	before := legacyHits(t, e.inst.HTTP)
	r := e.call("GET", "/cli/sessions?user_id="+uid, "", nil)
	expect(t, r, 200, "")
	if got := r.Header.Get("Deprecation"); got != `version="legacy-body-userid"; sunset="2026-05-15"` {
		t.Fatalf("Deprecation %q", got)
	}
	if got := r.Header.Get("Warning"); got != `299 - "body.user_id auth is deprecated; send Authorization: Bearer <session_token>"` {
		t.Fatalf("Warning %q", got)
	}
	if s, _ := r.Body["sessions"].([]any); len(s) != 1 {
		t.Fatalf("legacy sessions: %s", r.Raw)
	}
	if after := legacyHits(t, e.inst.HTTP); after != before+1 {
		t.Fatalf("broker_legacy_auth_hits_total %v -> %v", before, after)
	}
	expect(t, e.call("GET", "/cli/sessions?user_id=nobody", "", nil), 401, "invalid_or_revoked_token")
	// Revoking by id is a new route: never on the legacy identity.
	expect(t, e.call("POST", "/cli/session/revoke?user_id="+uid, "", map[string]any{"session_id": "x", "user_id": uid}), 401, "missing_bearer_token")

	off := newEnv(t, nil)
	uid, _ = off.user("old@example.com")
	r = off.call("GET", "/cli/sessions?user_id="+uid, "", nil)
	expect(t, r, 401, "missing_bearer_token")
	if r.Header.Get("Deprecation") != "" {
		t.Fatal("Deprecation header without the shim")
	}
}

func legacyHits(t *testing.T, base string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^broker_legacy_auth_hits_total (\S+)$`).FindStringSubmatch(string(raw))
	if m == nil {
		t.Fatalf("no broker_legacy_auth_hits_total in /metrics:\n%s", raw)
	}
	var v float64
	fmt.Sscan(m[1], &v)
	return v
}

// clitoken stores bearers in the form api.Authenticate looks them up.
func TestTokenHashIsTheAPIs(t *testing.T) {
	for _, tok := range []string{"", "x", clitoken.New()} {
		if clitoken.Hash(tok) != auth.HashToken(tok) {
			t.Fatalf("hash of %q differs", tok)
		}
	}
	if a, b := clitoken.New(), clitoken.New(); a == b || len(a) != 46 {
		t.Fatalf("tokens %q %q", a, b)
	}
}

// Codes that expired over an hour ago are deleted by later logins, a few at a time; the
// tokens they became stay. An approval nobody collected loses its bearer at the next login.
func TestOldDeviceCodesArePurged(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.d.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	oldCodes := func() int {
		t.Helper()
		var n int
		if err := e.d.Pool.QueryRow(ctx, `SELECT count(*) FROM device_codes WHERE expires_at < now() - interval '1 hour'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	start := e.startLogin(nil)
	expect(t, e.call("POST", "/cli/device-code/"+str(start, "session_id")+"/approve", appSecret,
		map[string]any{"user_id": "u1", "email": "u1@example.com"}), 200, "")
	tok := str(e.call("GET", "/cli/device-code/"+str(start, "device_code"), "", nil), "session_token")
	exec(`UPDATE device_codes SET expires_at = now() - interval '2 hours'`)
	exec(`INSERT INTO device_codes (id, device_code, user_code, session_id, status, expires_at)
		SELECT 'id'||i, 'dc'||i, 'uc'||i, 'sid'||i, 'expired', now() - interval '2 hours' FROM generate_series(1, 20) i`)
	e.startLogin(nil)
	if n := oldCodes(); n != 21-16 {
		t.Fatalf("%d old codes left after one login, want 5", n)
	}
	e.startLogin(nil)
	if n := oldCodes(); n != 0 {
		t.Fatalf("%d old codes left after two logins", n)
	}
	expect(t, e.call("GET", "/cli/sessions", tok, nil), 200, "")

	late := e.startLogin(nil)
	expect(t, e.call("POST", "/cli/device-code/"+str(late, "session_id")+"/approve", appSecret,
		map[string]any{"user_id": "u1", "email": "u1@example.com"}), 200, "")
	exec(`UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE device_code = $1`, str(late, "device_code"))
	e.startLogin(nil)
	var kept *string
	var status string
	var revoked bool
	if err := e.d.Pool.QueryRow(ctx, `SELECT d.session_token, d.status, c.revoked_at IS NOT NULL FROM device_codes d
		JOIN cli_sessions c ON c.device_code_id = d.id WHERE d.device_code = $1`, str(late, "device_code")).Scan(&kept, &status, &revoked); err != nil ||
		kept != nil || status != "expired" || !revoked {
		t.Fatalf("uncollected approval after the next login: token %v, status %s, revoked %v (%v)", kept, status, revoked, err)
	}
}

// Postgres text cannot hold NUL: every field a caller sends with one is refused or dropped
// with a 4xx or a normal answer, never a 500.
func TestNULCharactersAreBadInputNot500(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_LEGACY_AUTH": "1"})
	uid, tok := e.user("nul@example.com")
	r := e.startLogin(map[string]any{"hostname": "ho\x00st", "platform": "\x00", "arch": "x"})
	var host string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT hostname FROM device_codes WHERE device_code = $1`, str(r, "device_code")).Scan(&host); err != nil || host != "host" {
		t.Fatalf("hostname %q %v", host, err)
	}
	sid := str(r, "session_id")
	for _, f := range []string{"user_id", "email", "name"} {
		body := map[string]any{"user_id": "u1", "email": "a@b"}
		body[f] = "a\x00b"
		expect(t, e.call("POST", "/cli/device-code/"+sid+"/approve", appSecret, body), 400, f+" contains a NUL character")
		expect(t, e.call("POST", "/cli/token", appSecret, body), 400, f+" contains a NUL character")
	}
	expect(t, e.call("POST", "/cli/token", appSecret, map[string]any{"user_id": "u1", "email": "a@b", "hostname": "\x00"}), 400, "hostname contains a NUL character")
	expect(t, e.call("POST", "/cli/device-code/%00/approve", appSecret, map[string]any{"user_id": "u1", "email": "a@b"}), 404, "Code not found or expired")
	if r := e.call("GET", "/cli/device-code/%00", "", nil); r.Status != 200 || r.Body["status"] != "expired" {
		t.Fatalf("poll %%00: %s", r.Raw)
	}
	expect(t, e.call("GET", "/cli/sessions?user_id=%00", "", nil), 401, "missing_bearer_token")
	expect(t, e.call("GET", "/cli/sessions?user_id="+uid, "", nil), 200, "")
	if r := e.call("POST", "/cli/session/revoke", tok, map[string]any{"session_id": "\x00"}); r.Status != 200 || r.Body["found"] != false {
		t.Fatalf("revoke by NUL id: %s", r.Raw)
	}
	if r := e.call("POST", "/cli/session/revoke", "", map[string]any{"token": "\x00"}); r.Status != 200 || r.Body["found"] != false {
		t.Fatalf("revoke NUL token: %s", r.Raw)
	}
	mesh := e.mesh("nul", false)
	body := syncBody(signJWT(syncSecret, hs256, syncClaims("u\x00x", map[string]any{"id": mesh})))
	expect(t, e.call("POST", "/cli-sync", "", body), 400, "sync token invalid: malformed JWT")
	body = syncBody(signJWT(syncSecret, hs256, syncClaims("u2", map[string]any{"id": mesh + "\x00"})))
	expect(t, e.call("POST", "/cli-sync", "", body), 400, "sync token invalid: malformed JWT")
	body = syncBody(signJWT(syncSecret, hs256, syncClaims("u2", map[string]any{"id": mesh})))
	body["display_name"] = "a\x00"
	expect(t, e.call("POST", "/cli-sync", "", body), 400, "display_name contains a NUL character")
}

// The web app vouching for a new user with an email another transaction is giving to
// another user at that moment: 409, not a 500 (the unique index decides once the other
// commits).
func TestVouchedEmailRaceIsAConflict(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tx, err := e.d.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ('first', 'race@example.com')`); err != nil {
		t.Fatal(err)
	}
	done := make(chan reply, 1)
	go func() {
		done <- callAt(t, e.inst.HTTP, "POST", "/cli/token", appSecret, map[string]any{"user_id": "second", "email": "race@example.com"})
	}()
	// Wait until the request's insert waits on the uncommitted row.
	deadline := time.Now().Add(15 * time.Second)
	for waiting := 0; waiting == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the request never waited on the uncommitted user")
		}
		if err := e.d.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO users%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, <-done, http.StatusConflict, "email belongs to another user")
}
