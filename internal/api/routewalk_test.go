package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

// walkCase is how the route walk calls one writing route without its credential.
type walkCase struct {
	path string // with the fixture's ids in place of the pattern's wildcards
	// attempts are requests that lack the route's credential (or carry another user's);
	// each must be refused with one of its statuses and change nothing.
	attempts []walkAttempt
}

type walkAttempt struct {
	name     string
	token    string
	body     any
	statuses []int
	// check, if set, inspects a 200 answer that refuses in its body (device-code polls
	// and token revokes answer 200 whatever the code or token).
	check func(r reply) error
}

// walkFixture is a mesh with an owner, a stranger with a valid bearer, and ids to fill in.
type walkFixture struct {
	o           owned
	stranger    string // bearer of a user with no membership anywhere
	presenceID  string // a session of the owner's member (in its grace window)
	memberToken string // bearer of a plain member of the mesh (bob): an insider attacker
	other       map[string]string
}

// asMember is an attempt by a plain member of the mesh on something that is not its own.
func asMember(f walkFixture, body any) walkAttempt {
	return walkAttempt{name: "another member's bearer", token: f.memberToken, body: body, statuses: []int{403}}
}

// bearerAttempts are the refusals every bearer route must give: no credential, another
// user's bearer, a garbage bearer, and the owner's user_id in the body (the legacy path is
// off by default, so the body's user_id must not authenticate).
func bearerAttempts(f walkFixture, body map[string]any, strangerStatuses ...int) []walkAttempt {
	withUser := map[string]any{}
	for k, v := range body {
		withUser[k] = v
	}
	withUser["user_id"] = f.o.ownerID
	return []walkAttempt{
		{name: "no bearer", body: body, statuses: []int{401}},
		{name: "body user_id", body: withUser, statuses: []int{401}},
		{name: "garbage bearer", token: "cm_" + ids.New(), body: body, statuses: []int{401}},
		{name: "stranger's bearer", token: f.stranger, body: body, statuses: strangerStatuses},
	}
}

// TestRouteWalkNoWriteWithoutCredential walks the route table: every route that writes
// must have a case here (a new route without one fails this test), and each of its
// credential-less attempts must be refused and leave every table as it was.
func TestRouteWalkNoWriteWithoutCredential(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_INVITE_V2_ENABLED": "1"})
	f := walkFixture{o: e.createMesh("walk"), other: map[string]string{}}
	_, f.stranger = e.user("stranger@example.com")
	_, f.memberToken = e.member(f.o.meshID, "bob", "member")
	f.presenceID = ids.New()
	if _, err := e.d.Pool.Exec(context.Background(), `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, disconnected_at)
		VALUES ($1, $2, $3, 'k:walk', 'walk-session', 1, '/w', now())`, f.presenceID, f.o.meshID, f.o.owner.MemberID); err != nil {
		t.Fatal(err)
	}
	cases := walkCases(t, e, f)

	for _, rt := range api.Routes() {
		if rt.Doc == "" || rt.Handler == nil {
			t.Errorf("%s %s: no Doc or handler", rt.Method, rt.Pattern)
		}
		if !rt.Writes {
			continue
		}
		key := rt.Method + " " + rt.Pattern
		if rt.Auth == api.AuthNone {
			if _, ok := openWrites[key]; !ok || !rt.IPLimited {
				t.Errorf("%s writes without authentication: give it a credential, or list it in openWrites (and IPLimited) with the reason it is safe", key)
			}
			continue
		}
		c, ok := cases[key]
		if !ok {
			t.Errorf("%s writes (auth %s) but the route walk has no case for it: add one to walkCases", key, rt.Auth)
			continue
		}
		if len(c.attempts) == 0 {
			t.Errorf("%s: no attempts", key)
		}
		for _, at := range c.attempts {
			before := snapshot(t, e)
			r := e.call(rt.Method, c.path, at.token, at.body)
			ok := false
			for _, s := range at.statuses {
				ok = ok || r.Status == s
			}
			if !ok {
				t.Errorf("%s (%s): status %d, want one of %v (body %s)", key, at.name, r.Status, at.statuses, r.Raw)
			}
			if r.Status == http.StatusOK {
				if at.check == nil {
					t.Errorf("%s (%s): answered 200 without a credential: %s", key, at.name, r.Raw)
				} else if err := at.check(r); err != nil {
					t.Errorf("%s (%s): %v", key, at.name, err)
				}
			}
			if after := snapshot(t, e); after != before {
				t.Errorf("%s (%s) changed the database: %s", key, at.name, diffTables(before, after))
			}
		}
	}
}

// openWrites are the routes anyone may call that write, and why that is safe.
var openWrites = map[string]string{
	"POST /cli/device-code": "starts a login: a pending code that grants nothing until a user's app or bearer approves it; bounded per IP and globally, purged after expiry",
}

// walkCases builds the per-route attempts.
func walkCases(t *testing.T, e *env, f walkFixture) map[string]walkCase {
	o := f.o
	mesh := "/mesh/" + o.meshID
	victim := o.owner.MemberID
	var ownerSession string
	if err := e.d.Pool.QueryRow(context.Background(), `SELECT id FROM cli_sessions WHERE user_id = $1`, o.ownerID).Scan(&ownerSession); err != nil {
		t.Fatal(err)
	}
	// A real invite whose one use is spent (what a leaked, used link is), and a forged one:
	// signed by the attacker's key, naming it as the owner.
	mesh0, err := e.q.GetMesh(context.Background(), o.meshID)
	if err != nil {
		t.Fatal(err)
	}
	spent, err := invitestore.Create(context.Background(), e.d.Pool, invitestore.Params{Mesh: mesh0, Role: "member", BrokerURL: "ws://x/ws", AppURL: "http://x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Pool.Exec(context.Background(), `UPDATE invites SET used_count = max_uses WHERE id = $1`, spent.ID); err != nil {
		t.Fatal(err)
	}
	live, err := invitestore.Create(context.Background(), e.d.Pool, invitestore.Params{Mesh: mesh0, Role: "member", BrokerURL: "ws://x/ws", AppURL: "http://x"})
	if err != nil {
		t.Fatal(err)
	}
	spentPayload, err := invite.DecodeToken(spent.Token)
	if err != nil {
		t.Fatal(err)
	}
	forged := spentPayload
	attackerPub, attackerSec := client.NewKey()
	forged.OwnerPubkey, forged.Role, forged.Nonce = attackerPub, "admin", invite.NewNonce()
	forged.Sign(attackerSec)
	joiner, _ := client.NewKey()
	join := func(p invite.Payload, tok string) map[string]any {
		return map[string]any{"invite_token": tok, "invite_payload": p, "peer_pubkey": joiner, "display_name": "mallory"}
	}
	x25519 := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	claim := map[string]any{"recipient_x25519_pubkey": x25519, "peer_pubkey": joiner, "display_name": "mallory"}
	// A pending device code, and an approval or a token asked for the owner's account.
	login := e.startLogin(map[string]any{"hostname": "victim"})
	forOwner := map[string]any{"user_id": o.ownerID, "email": "owner@example.com", "name": "Owner"}
	approverAttempts := []walkAttempt{
		{name: "no credential", body: forOwner, statuses: []int{401}},
		{name: "garbage bearer", token: "cm_" + ids.New(), body: forOwner, statuses: []int{401}},
		{name: "another user's bearer", token: f.stranger, body: forOwner, statuses: []int{403}},
		{name: "a member's bearer", token: f.memberToken, body: forOwner, statuses: []int{403}},
	}
	syncForged := signJWT("not-the-secret", hs256, syncClaims(o.ownerID, map[string]any{"id": o.meshID, "slug": o.slug, "role": "admin"}))
	perms := map[string]any{"requester_id": o.ownerID, "member_id": victim, "permissions": map[string]bool{"canDeleteMesh": false}}
	return map[string]walkCase{
		"POST /cli/mesh/create": {path: "/cli/mesh/create",
			attempts: bearerAttempts(f, map[string]any{"name": "x", "pubkey": o.owner.Pubkey})[:3]},
		"POST /cli/mesh/{slug}/grants": {path: "/cli/mesh/" + o.slug + "/grants",
			attempts: bearerAttempts(f, map[string]any{"grants": map[string]any{o.owner.Pubkey: []string{}}}, 403)},
		"DELETE /cli/mesh/{slug}": {path: "/cli/mesh/" + o.slug,
			attempts: append(bearerAttempts(f, map[string]any{}, 403), asMember(f, map[string]any{}))},
		"POST /cli/mesh/{slug}/permissions": {path: "/cli/mesh/" + o.slug + "/permissions",
			attempts: append(bearerAttempts(f, perms, 403), asMember(f, perms))},
		"PATCH /mesh/{meshId}/member/{memberId}": {path: mesh + "/member/" + victim,
			attempts: append(bearerAttempts(f, map[string]any{"roleTag": "x"}, 403), asMember(f, map[string]any{"roleTag": "x"}))},
		"DELETE /mesh/{meshId}/member/{memberId}": {path: mesh + "/member/" + victim,
			attempts: append(bearerAttempts(f, map[string]any{}, 403), asMember(f, map[string]any{}))},
		"PATCH /mesh/{meshId}/settings": {path: mesh + "/settings",
			attempts: append(bearerAttempts(f, map[string]any{"selfEditable": map[string]any{"roleTag": false}}, 403),
				asMember(f, map[string]any{"selfEditable": map[string]any{"roleTag": false}}))},
		"POST /join": {path: "/join", attempts: []walkAttempt{
			{name: "spent invite", body: join(spentPayload, spent.Token), statuses: []int{400}},
			{name: "forged invite", body: join(forged, forged.Token()), statuses: []int{400}},
			{name: "no invite", body: join(invite.Payload{}, ""), statuses: []int{400}},
		}},
		"POST /invites/{code}/claim": {path: "/invites/" + spent.Code + "/claim", attempts: []walkAttempt{
			{name: "spent code", body: claim, statuses: []int{410}},
		}},
		"DELETE /cli/mesh/{slug}/invite/{invite}": {path: "/cli/mesh/" + o.slug + "/invite/" + live.Code,
			attempts: append(bearerAttempts(f, map[string]any{}, 403), asMember(f, map[string]any{}))},
		"POST /cli/mesh/{slug}/invite": {path: "/cli/mesh/" + o.slug + "/invite",
			attempts: append(bearerAttempts(f, map[string]any{"role": "admin"}, 403), asMember(f, map[string]any{"role": "admin"}))},
		"GET /cli/device-code/{code}": {path: "/cli/device-code/" + ids.New()[:16], attempts: []walkAttempt{
			{name: "unknown device code", statuses: []int{200}, check: func(r reply) error {
				if r.Body["status"] != "expired" || r.Body["session_token"] != nil {
					return fmt.Errorf("answered %s", r.Raw)
				}
				return nil
			}},
		}},
		"POST /cli/device-code/{code}/approve": {path: "/cli/device-code/" + str(login, "session_id") + "/approve", attempts: approverAttempts},
		"POST /cli/token":                      {path: "/cli/token", attempts: approverAttempts},
		"POST /cli/session/revoke": {path: "/cli/session/revoke", attempts: []walkAttempt{
			{name: "unknown token", body: map[string]any{"token": "cm_" + ids.New()}, statuses: []int{200}, check: func(r reply) error {
				if r.Body["found"] != false {
					return fmt.Errorf("answered %s", r.Raw)
				}
				return nil
			}},
			{name: "another's session id, no bearer", body: map[string]any{"session_id": ids.New()}, statuses: []int{400, 401}},
			{name: "another's session id, a stranger's bearer", token: f.stranger,
				body: map[string]any{"session_id": ownerSession}, statuses: []int{200, 404}, check: func(r reply) error {
					if r.Body["found"] != false {
						return fmt.Errorf("answered %s", r.Raw)
					}
					return nil
				}},
		}},
		"POST /cli-sync": {path: "/cli-sync", attempts: []walkAttempt{
			{name: "token signed with another secret", body: map[string]any{"sync_token": syncForged, "peer_pubkey": joiner, "display_name": "mallory"}, statuses: []int{400}},
		}},
		"DELETE /mesh/{meshId}/session/{presenceId}": {path: mesh + "/session/" + f.presenceID,
			attempts: append(bearerAttempts(f, map[string]any{}, 403), asMember(f, map[string]any{}))},
	}
}

// snapshot is every table's content (but for rows the background jobs rewrite, and bearer
// last_seen_at bumps), as one comparable string.
func snapshot(t *testing.T, e *env) string {
	t.Helper()
	ctx := context.Background()
	rows, err := e.d.Pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'
		AND tablename NOT IN ('instances', 'job_runs', 'rate_buckets', 'hello_replays', 'goose_db_version') ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	var b strings.Builder
	for _, tb := range tables {
		var sum string
		q := fmt.Sprintf(`SELECT coalesce(md5(string_agg(j, ',' ORDER BY j)), '') FROM
			(SELECT (to_jsonb(t) - 'last_seen_at')::text AS j FROM %q t) s`, tb)
		if err := e.d.Pool.QueryRow(ctx, q).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s\n", tb, sum)
	}
	return b.String()
}

func diffTables(before, after string) string {
	b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
	var changed []string
	for i := range b {
		if i < len(a) && a[i] != b[i] {
			changed = append(changed, strings.SplitN(b[i], "=", 2)[0])
		}
	}
	return "tables " + strings.Join(changed, ", ")
}
