package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
)

const syncSecret = "test-sync-secret" // CLI_SYNC_SECRET of the test environments

func b64(v any) string {
	raw, ok := v.([]byte)
	if !ok {
		raw, _ = json.Marshal(v)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// signJWT builds header.claims.signature with HMAC-SHA256 under secret.
func signJWT(secret string, header, claims any) string {
	signing := b64(header) + "." + b64(claims)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

var hs256 = map[string]any{"alg": "HS256", "typ": "JWT"}

// syncClaims are valid claims for sub over meshes; each call has a fresh jti.
func syncClaims(sub string, meshes ...map[string]any) map[string]any {
	now := time.Now().Unix()
	return map[string]any{"sub": sub, "email": sub + "@example.com", "meshes": meshes, "action": "sync",
		"jti": ids.New(), "iat": now, "exp": now + 300}
}

func (e *env) mesh(slug string, archived bool) string {
	e.t.Helper()
	id := ids.New()
	q := `INSERT INTO meshes (id, name, slug) VALUES ($1, $2, $2)`
	if archived {
		q = `INSERT INTO meshes (id, name, slug, archived_at) VALUES ($1, $2, $2, now())`
	}
	if _, err := e.d.Pool.Exec(context.Background(), q, id, slug); err != nil {
		e.t.Fatal(err)
	}
	return id
}

var syncKey = strings.Repeat("ab", 32)

func syncBody(token string) map[string]any {
	return map[string]any{"sync_token": token, "peer_pubkey": syncKey, "display_name": "Alice's laptop"}
}

// Every refusal of /cli-sync, with the original's reason strings.
func TestCliSyncRefusals(t *testing.T) {
	e := newEnv(t, nil)
	meshID := e.mesh("team", false)
	m := map[string]any{"id": meshID, "slug": "team", "role": "member"}
	with := func(mod func(c map[string]any)) string {
		c := syncClaims("u1", m)
		mod(c)
		return signJWT(syncSecret, hs256, c)
	}
	good := signJWT(syncSecret, hs256, syncClaims("u1", m))
	parts := strings.Split(good, ".")
	now := time.Now().Unix()
	cases := []struct {
		name string
		body any
		want string
	}{
		{"no body", nil, "sync_token, peer_pubkey, display_name required"},
		{"bad json", "{", "sync_token, peer_pubkey, display_name required"},
		{"no token", map[string]any{"peer_pubkey": syncKey, "display_name": "x"}, "sync_token, peer_pubkey, display_name required"},
		{"blank name", map[string]any{"sync_token": good, "peer_pubkey": syncKey, "display_name": "  "}, "sync_token, peer_pubkey, display_name required"},
		{"short key", map[string]any{"sync_token": good, "peer_pubkey": "abcd", "display_name": "x"}, "peer_pubkey must be 64 hex chars (32 bytes)"},
		{"non-hex key", map[string]any{"sync_token": good, "peer_pubkey": strings.Repeat("zz", 32), "display_name": "x"}, "peer_pubkey must be 64 hex chars (32 bytes)"},
		{"long name", map[string]any{"sync_token": good, "peer_pubkey": syncKey, "display_name": strings.Repeat("n", 201)}, "display_name longer than 200 characters"},
		{"two parts", syncBody(parts[0] + "." + parts[1]), "sync token invalid: malformed JWT"},
		{"four parts", syncBody(good + ".x"), "sync token invalid: malformed JWT"},
		{"bad signature", syncBody(parts[0] + "." + parts[1] + "." + b64([]byte("nope"))), "sync token invalid: invalid signature"},
		{"other secret", syncBody(signJWT("other", hs256, syncClaims("u1", m))), "sync token invalid: invalid signature"},
		{"signature not base64", syncBody(parts[0] + "." + parts[1] + ".***"), "sync token invalid: invalid signature"},
		{"header not json", syncBody(signJWT(syncSecret, []byte("nope"), syncClaims("u1", m))), "sync token invalid: malformed JWT"},
		{"claims not json", syncBody(signJWT(syncSecret, hs256, []byte("[1]"))), "sync token invalid: malformed JWT"},
		{"alg none", syncBody(signJWT(syncSecret, map[string]any{"alg": "none"}, syncClaims("u1", m))), "sync token invalid: unsupported algorithm: none"},
		{"alg HS512", syncBody(signJWT(syncSecret, map[string]any{"alg": "HS512"}, syncClaims("u1", m))), "sync token invalid: unsupported algorithm: HS512"},
		{"no alg", syncBody(signJWT(syncSecret, map[string]any{"typ": "JWT"}, syncClaims("u1", m))), "sync token invalid: unsupported algorithm: undefined"},
		{"exp not a number", syncBody(with(func(c map[string]any) { c["exp"] = "soon" })), "sync token invalid: malformed JWT"},
		{"no exp", syncBody(with(func(c map[string]any) { delete(c, "exp") })), "sync token invalid: missing exp"},
		{"expired", syncBody(with(func(c map[string]any) { c["exp"] = now - 1 })), "sync token invalid: token expired"},
		{"future", syncBody(with(func(c map[string]any) { c["iat"] = now + 60 })), "sync token invalid: token issued in the future"},
		{"no jti", syncBody(with(func(c map[string]any) { delete(c, "jti") })), "sync token invalid: missing jti"},
		{"no sub", syncBody(with(func(c map[string]any) { delete(c, "sub") })), "sync token invalid: missing sub or email"},
		{"no email", syncBody(with(func(c map[string]any) { c["email"] = "" })), "sync token invalid: missing sub or email"},
		{"long sub", syncBody(with(func(c map[string]any) { c["sub"] = strings.Repeat("s", 201) })), "sync token invalid: sub or email too long"},
		{"no meshes", syncBody(with(func(c map[string]any) { delete(c, "meshes") })), "sync token invalid: missing meshes array"},
		{"meshes object", syncBody(with(func(c map[string]any) { c["meshes"] = map[string]any{"id": meshID} })), "sync token invalid: missing meshes array"},
		{"too many meshes", syncBody(with(func(c map[string]any) {
			var ms []map[string]any
			for range 101 {
				ms = append(ms, map[string]any{"id": ids.New()})
			}
			c["meshes"] = ms
		})), "sync token invalid: too many meshes (max 100)"},
		{"empty meshes", syncBody(with(func(c map[string]any) { c["meshes"] = []any{} })), "no valid meshes found in sync token"},
		{"unknown mesh", syncBody(with(func(c map[string]any) { c["meshes"] = []any{map[string]any{"id": "nope"}, 5, "x"} })), "no valid meshes found in sync token"},
		{"archived mesh", syncBody(with(func(c map[string]any) { c["meshes"] = []any{map[string]any{"id": e.mesh("old", true)}} })), "no valid meshes found in sync token"},
	}
	for _, c := range cases {
		r := e.call("POST", "/cli-sync", "", c.body)
		if r.Status != 400 || r.Body["ok"] != false || r.Body["error"] != c.want {
			t.Errorf("%s: %d %s, want 400 %q", c.name, r.Status, r.Raw, c.want)
		}
	}
	var members, users int
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM members), (SELECT count(*) FROM users)`).Scan(&members, &users); err != nil ||
		members != 0 || users != 0 {
		t.Fatalf("refused syncs wrote %d members, %d users (%v)", members, users, err)
	}

	unset := newEnv(t, map[string]string{"CLI_SYNC_SECRET": ""})
	expect(t, unset.call("POST", "/cli-sync", "", syncBody(good)), 400, "sync token invalid: CLI_SYNC_SECRET not configured on broker")
}

// A sync joins the listed live meshes (new members with the token's role, audited), links
// the account's existing member, leaves another account's member alone; the token is
// single-use across instances, and a refused request does not use it up.
func TestCliSyncJoinsAndIsSingleUse(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_URL": "wss://broker.example.com/ws"})
	ctx := context.Background()
	syncKey, syncSec := client.NewKey() // a real key: linking m-linked needs its proof
	fresh, linked, foreign := e.mesh("fresh", false), e.mesh("linked", false), e.mesh("foreign", false)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.d.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role) VALUES ('m-linked', $1, $2, 'old name', 'admin')`, linked, syncKey)
	exec(`INSERT INTO users (id) VALUES ('u-other')`)
	exec(`INSERT INTO members (id, mesh_id, user_id, peer_pubkey, display_name) VALUES ('m-foreign', $1, 'u-other', $2, 'theirs')`, foreign, syncKey)

	claims := syncClaims("u-sync",
		map[string]any{"id": fresh, "slug": "fresh", "role": "admin"},
		map[string]any{"id": linked, "slug": "linked", "role": "member"},
		map[string]any{"id": foreign, "slug": "foreign", "role": "owner"},
		map[string]any{"id": "missing"})
	token := signJWT(syncSecret, hs256, claims)
	body := map[string]any{"sync_token": token, "peer_pubkey": strings.ToUpper(syncKey), "display_name": "Alice's laptop",
		"peer_sig": hex.EncodeToString(ed25519.Sign(syncSec, api.SyncProofMessage(claims["jti"].(string))))}
	r := e.call("POST", "/cli-sync", "", body)
	expect(t, r, 200, "")
	ms, _ := r.Body["meshes"].([]any)
	if r.Body["ok"] != true || r.Body["account_id"] != "u-sync" || len(ms) != 2 {
		t.Fatalf("sync: %s", r.Raw)
	}
	first, second := ms[0].(map[string]any), ms[1].(map[string]any)
	if first["mesh_id"] != fresh || first["slug"] != "fresh" || first["role"] != "admin" || first["broker_url"] != "wss://broker.example.com/ws" ||
		second["mesh_id"] != linked || second["member_id"] != "m-linked" || second["role"] != "admin" {
		t.Fatalf("meshes: %s", r.Raw)
	}
	var userID, dash, name, role, pub string
	if err := e.d.Pool.QueryRow(ctx, `SELECT user_id, dashboard_user_id, display_name, role, peer_pubkey FROM members WHERE id = $1`, first["member_id"]).
		Scan(&userID, &dash, &name, &role, &pub); err != nil || userID != "u-sync" || dash != "u-sync" || name != "Alice's laptop" || role != "admin" || pub != syncKey {
		t.Fatalf("new member: %s %s %s %s %s %v", userID, dash, name, role, pub, err)
	}
	if err := e.d.Pool.QueryRow(ctx, `SELECT dashboard_user_id, display_name FROM members WHERE id = 'm-linked'`).Scan(&dash, &name); err != nil ||
		dash != "u-sync" || name != "Alice's laptop" {
		t.Fatalf("linked member: %s %s %v", dash, name, err)
	}
	var foreignDash *string
	if err := e.d.Pool.QueryRow(ctx, `SELECT dashboard_user_id, display_name FROM members WHERE id = 'm-foreign'`).Scan(&foreignDash, &name); err != nil ||
		foreignDash != nil || name != "theirs" {
		t.Fatalf("another account's member changed: %v %s %v", foreignDash, name, err)
	}
	var email string
	if err := e.d.Pool.QueryRow(ctx, `SELECT email FROM users WHERE id = 'u-sync'`).Scan(&email); err != nil || email != "u-sync@example.com" {
		t.Fatalf("user: %q %v", email, err)
	}
	var events int
	var payload map[string]any
	if err := e.d.Pool.QueryRow(ctx, `SELECT count(*) OVER (), payload FROM audit_log WHERE event_type = 'member_joined' AND mesh_id = $1`, fresh).
		Scan(&events, &payload); err != nil || events != 1 || len(payload) != 3 ||
		payload["memberId"] != first["member_id"] || payload["role"] != "admin" || payload["via"] != "cli-sync" {
		t.Fatalf("audit: %d %v %v", events, payload, err)
	}
	var linkedEvents int
	_ = e.d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE mesh_id = $1`, linked).Scan(&linkedEvents)
	if linkedEvents != 0 {
		t.Fatalf("linking an existing member wrote %d audit events", linkedEvents)
	}

	// The same token again, on another instance: used.
	two := e.second()
	r2 := callAt(t, two.HTTP, "POST", "/cli-sync", "", body)
	if r2.Status != 400 || r2.Body["error"] != "sync token invalid: token already used" {
		t.Fatalf("replay on the second instance: %d %s", r2.Status, r2.Raw)
	}

	// A refused request leaves its token unused: no valid mesh yet, then the mesh exists.
	later := e.mesh("later", true)
	claims = syncClaims("u-sync", map[string]any{"id": later})
	token = signJWT(syncSecret, hs256, claims)
	expect(t, e.call("POST", "/cli-sync", "", syncBody(token)), 400, "no valid meshes found in sync token")
	exec(`UPDATE meshes SET archived_at = NULL WHERE id = $1`, later)
	expect(t, e.call("POST", "/cli-sync", "", syncBody(token)), 200, "")
	expect(t, e.call("POST", "/cli-sync", "", syncBody(token)), 400, "sync token invalid: token already used")
}

// Used jtis are kept until their token expires, then purged by later inserts; an expired
// record does not block its jti (the token itself is refused as expired by then).
func TestCliSyncJtiPurge(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.d.Pool.Exec(ctx, `INSERT INTO cli_sync_jtis (jti, expires_at) SELECT 'old'||i, now() - interval '1 minute' FROM generate_series(1, 20) i`); err != nil {
		t.Fatal(err)
	}
	mesh := e.mesh("team", false)
	c := syncClaims("u1", map[string]any{"id": mesh})
	expect(t, e.call("POST", "/cli-sync", "", syncBody(signJWT(syncSecret, hs256, c))), 200, "")
	var left int
	var exp time.Time
	if err := e.d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM cli_sync_jtis WHERE jti LIKE 'old%'), (SELECT expires_at FROM cli_sync_jtis WHERE jti = $1)`, c["jti"]).
		Scan(&left, &exp); err != nil || left != 4 || exp.Unix() != c["exp"].(int64) {
		t.Fatalf("after one insert: %d expired records left (want 4), expiry %v (%v)", left, exp, err)
	}
}

// The route answers in the {ok:false} shape and is bounded per client IP.
func TestCliSyncIPLimited(t *testing.T) {
	e := newEnv(t, map[string]string{"API_IP_RATE_LIMIT_PER_MIN": "2"})
	for range 2 {
		expect(t, e.call("POST", "/cli-sync", "", nil), 400, "sync_token, peer_pubkey, display_name required")
	}
	r := e.call("POST", "/cli-sync", "", nil)
	if r.Status != http.StatusTooManyRequests || r.Body["ok"] != false || r.Body["error"] != "rate limited" {
		t.Fatalf("third: %d %s", r.Status, r.Raw)
	}
}

// A /cli-sync that renames an account's existing member tells its live sessions
// (profile_updated), as a PATCH of the member would.
func TestCliSyncRenamePushesProfileUpdated(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("synced")
	pub, sec := client.NewKey()
	memberID := ids.New()
	if _, err := e.d.Pool.Exec(context.Background(), `INSERT INTO members (id, mesh_id, user_id, peer_pubkey, display_name) VALUES ($1, $2, $3, $4, 'old name')`,
		memberID, o.meshID, o.ownerID, pub); err != nil {
		t.Fatal(err)
	}
	sess := dial(t, e.inst.WS, client.Identity{MeshID: o.meshID, MemberID: memberID, Pubkey: pub, Secret: sec})
	tok := signJWT("test-sync-secret", hs256, syncClaims(o.ownerID, map[string]any{"id": o.meshID, "slug": o.slug, "role": "member"}))
	r := e.call("POST", "/cli-sync", "", map[string]any{"sync_token": tok, "peer_pubkey": pub, "display_name": "new name"})
	expect(t, r, http.StatusOK, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		f, err := sess.Next(ctx, "push")
		if err != nil {
			t.Fatalf("no profile_updated: %v", err)
		}
		if f.Str("event") == "profile_updated" {
			if d, _ := f["eventData"].(map[string]any); d["displayName"] != "new name" {
				t.Fatalf("profile_updated %v", f)
			}
			return
		}
	}
}
