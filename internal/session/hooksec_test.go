package session_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Tests of issue 9's finding B: POST /hook/set-status without credentials cannot end,
// freeze or probe a session, in any mesh; with a member's hook token it acts on that
// member's presences only; per-IP rate limits; unmatched signals are bounded.

// A stranger's hooks: SessionEnd and dnd are refused 401 whatever they name (session id or
// cwd), working/idle are answered {ok:true} whether or not a session matched, and the
// victims — the same cwd in two meshes — keep their sockets, presences and statuses.
func TestHookWithoutTokenCannotEndFreezeOrProbe(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	a := brokertest.Mesh(t, q, "alice", "bob")
	b := brokertest.Mesh(t, q, "bob2")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	bob := dial(ctx, t, inst.WS, a["bob"], client.Options{SessionID: "bob-cc", Cwd: "/victim", Pid: 7})
	bob2 := dial(ctx, t, inst.WS, b["bob2"], client.Options{SessionID: "bob2-cc", Cwd: "/victim", Pid: 8})

	for _, body := range []string{
		`{"session_id":"bob-cc","cwd":"/x","hook_event_name":"SessionEnd"}`,
		`{"cwd":"/victim","hook_event_name":"SessionEnd"}`,
		`{"cwd":"/victim","status":"dnd"}`,
		`{"session_id":"bob2-cc","cwd":"/victim","status":"dnd"}`,
	} {
		if code, m := postHook(t, inst.HTTP, body); code != 401 || m["ok"] != false {
			t.Fatalf("%s without a token: %d %v, want 401", body, code, m)
		}
	}
	stillOpen(t, "after the stranger's hooks", bob)
	stillOpen(t, "after the stranger's hooks", bob2)
	for _, c := range []*client.Client{bob, bob2} {
		if st, _ := presenceStatus(t, d, c.Ack.Str("presenceId")); st != "idle" {
			t.Fatalf("a stranger's hook changed a status to %s", st)
		}
	}
	// Probing: the same answer for a cwd with a session and one without.
	_, hit := postHook(t, inst.HTTP, `{"cwd":"/victim","status":"idle"}`)
	_, miss := postHook(t, inst.HTTP, `{"cwd":"/nobody-here","status":"idle"}`)
	if fmt.Sprint(hit) != fmt.Sprint(miss) || fmt.Sprint(hit) != "map[ok:true]" {
		t.Fatalf("answers differ: %v for a session, %v for none", hit, miss)
	}
}

// The hook token: the same token on every request, a new one on rotate (the old one then
// refused), and with it a hook acts on its member's presences only — SessionEnd by cwd ends
// the token member's session, not another member's with the same cwd; dnd is allowed. A
// revoked member's token is refused.
func TestHookTokenActsOnItsMemberOnly(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ids := brokertest.Mesh(t, q, "alice", "bob", "carol")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	bob := dial(ctx, t, i1.WS, ids["bob"], client.Options{SessionID: "bob-cc", Cwd: "/shared"})
	carol := dial(ctx, t, i1.WS, ids["carol"], client.Options{SessionID: "carol-cc", Cwd: "/shared"})

	t1 := hookToken(ctx, t, bob, false)
	if again := hookToken(ctx, t, bob, false); again != t1 {
		t.Fatalf("second request gave another token")
	}
	carolToken := hookToken(ctx, t, carol, false)
	if carolToken == t1 {
		t.Fatal("two members share a token")
	}
	t2 := hookToken(ctx, t, bob, true)
	if t2 == t1 {
		t.Fatal("rotate kept the token")
	}
	if again := hookToken(ctx, t, bob, false); again != t2 {
		t.Fatal("after rotate, the token changed again")
	}
	var stored string
	if err := d.Pool.QueryRow(ctx, "SELECT token_hash FROM hook_tokens WHERE member_id = $1", ids["bob"].MemberID).Scan(&stored); err != nil || stored == t2 || len(stored) != 64 {
		t.Fatalf("stored %q (%v): want the token's hex SHA-256, never the token", stored, err)
	}
	auth := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	if code, m := postHookWith(t, i2.HTTP, `{"cwd":"/shared","status":"dnd"}`, auth(t1)); code != 401 || m["error"] != "invalid hook token" {
		t.Fatalf("rotated-out token: %d %v", code, m)
	}
	if code, m := postHookWith(t, i2.HTTP, `{"cwd":"/shared","status":"dnd"}`, auth(t2)); code != 200 || m["presence_id"] != bob.Ack.Str("presenceId") {
		t.Fatalf("dnd with bob's token: %d %v", code, m)
	}
	if st, _ := presenceStatus(t, d, bob.Ack.Str("presenceId")); st != "dnd" {
		t.Fatalf("bob's status %s, want dnd", st)
	}
	if st, _ := presenceStatus(t, d, carol.Ack.Str("presenceId")); st != "idle" {
		t.Fatalf("bob's token changed carol's status to %s", st)
	}
	// SessionEnd by the shared cwd, with carol's token: carol's session ends, bob's stays.
	if code, m := postHookWith(t, i2.HTTP, `{"cwd":"/shared","hook_event_name":"SessionEnd"}`, auth(carolToken)); code != 200 || m["presence_id"] != carol.Ack.Str("presenceId") {
		t.Fatalf("SessionEnd with carol's token: %d %v", code, m)
	}
	select {
	case <-carol.Done():
	case <-ctx.Done():
		t.Fatal("carol's socket not closed by her SessionEnd")
	}
	stillOpen(t, "carol's SessionEnd", bob)
	// Revoked: the token goes with the member.
	if _, err := admin.RevokeMember(ctx, d.Pool, ids["bob"].MeshID, ids["bob"].MemberID, ""); err != nil {
		t.Fatal(err)
	}
	if code, m := postHookWith(t, i2.HTTP, `{"cwd":"/shared","status":"idle"}`, auth(t2)); code != 401 {
		t.Fatalf("revoked member's token: %d %v", code, m)
	}
}

// HOOK_LEGACY_UNAUTHENTICATED=0 refuses every hook without a token. The per-IP bucket holds
// however the caller varies (pid, cwd); Fly-Client-IP picks the bucket only with
// TRUST_PROXY_HEADERS=1.
func TestHookLegacyOffAndPerIPRateLimit(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	strict := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "HOOK_LEGACY_UNAUTHENTICATED": "0"})
	if code, m := postHook(t, strict.HTTP, `{"cwd":"/a","status":"idle"}`); code != 401 || m["error"] != "hook token required" {
		t.Fatalf("legacy off, no token: %d %v", code, m)
	}

	d2 := testdb.New(t)
	env := map[string]string{"DATABASE_URL": d2.URL, "HOOK_IP_RATE_LIMIT_PER_MIN": "5"}
	open := brokertest.Start(t, env)
	for i := range 5 {
		if code, m := postHook(t, open.HTTP, fmt.Sprintf(`{"cwd":"/cwd-%d","pid":%d,"status":"idle"}`, i, i)); code != 200 {
			t.Fatalf("request %d: %d %v", i+1, code, m)
		}
	}
	if code, _ := postHookWith(t, open.HTTP, `{"cwd":"/cwd-new","status":"idle"}`, map[string]string{"Fly-Client-IP": "10.0.0.9"}); code != 429 {
		t.Fatalf("6th request from the IP (untrusted Fly-Client-IP): %d, want 429", code)
	}
	if !contains(metricsText(t, open.HTTP), "broker_hook_requests_rate_limited_total 1") {
		t.Fatal("the refusal is not counted")
	}
	env["TRUST_PROXY_HEADERS"] = "1"
	proxied := brokertest.Start(t, env)
	if code, _ := postHookWith(t, proxied.HTTP, `{"cwd":"/cwd-p","status":"idle"}`, map[string]string{"Fly-Client-IP": "10.0.0.9"}); code != 200 {
		t.Fatalf("another client IP behind a trusted proxy: %d", code)
	}
	if code, _ := postHook(t, proxied.HTTP, `{"cwd":"/cwd-q","status":"idle"}`); code != 429 {
		t.Fatalf("the exhausted IP through the trusting instance: %d, want 429", code)
	}
}

// Unmatched hook signals wait in pending_statuses only while few do: 10 000 unauthenticated
// ones in all and 100 of one client IP, and 100 of each token member, counted apart — strangers filling their share
// do not crowd out a member's own signals.
func TestPendingHookSignalsAreBounded(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "TRUST_PROXY_HEADERS": "1"})
	ctx := within(t, 20*time.Second)
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b", Cwd: "/b"})
	token := hookToken(ctx, t, bob, false)
	hdr := map[string]string{"Authorization": "Bearer " + token}
	fromIP := func(ip string) int {
		var n int
		if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM pending_statuses WHERE client_ip = $1", ip).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// One address keeps at most 100 waiting.
	if _, err := d.Pool.Exec(ctx, "INSERT INTO pending_statuses (cwd, status, client_ip) SELECT '/ip/' || g, 'idle', '10.9.9.9' FROM generate_series(1, 100) g"); err != nil {
		t.Fatal(err)
	}
	postHookWith(t, inst.HTTP, `{"cwd":"/ip/new","status":"working"}`, map[string]string{"Fly-Client-IP": "10.9.9.9"})
	postHookWith(t, inst.HTTP, `{"cwd":"/ip/other","status":"working"}`, map[string]string{"Fly-Client-IP": "10.8.8.8"})
	if a, b := fromIP("10.9.9.9"), fromIP("10.8.8.8"); a != 100 || b != 1 {
		t.Fatalf("signals waiting from the full address %d (want 100), from another %d (want 1)", a, b)
	}
	if _, err := d.Pool.Exec(ctx, "DELETE FROM pending_statuses"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, "INSERT INTO pending_statuses (cwd, status) SELECT '/flood/' || g, 'idle' FROM generate_series(1, 10000) g"); err != nil {
		t.Fatal(err)
	}
	count := func(member bool) int {
		var n int
		if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM pending_statuses WHERE (member_id IS NOT NULL) = $1", member).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if code, m := postHook(t, inst.HTTP, `{"cwd":"/stranger","status":"working"}`); code != 200 || m["ok"] != true {
		t.Fatalf("unauthenticated signal with 10 000 waiting: %d %v", code, m)
	}
	if n := count(false); n != 10000 {
		t.Fatalf("%d unauthenticated signals waiting, want the 10 000 cap", n)
	}
	if code, m := postHookWith(t, inst.HTTP, `{"cwd":"/later","status":"working"}`, hdr); code != 200 || m["pending"] != true {
		t.Fatalf("token signal with the strangers' share full: %d %v, want pending", code, m)
	}
	if _, err := d.Pool.Exec(ctx, "INSERT INTO pending_statuses (cwd, status, member_id) SELECT '/mine/' || g, 'idle', $1 FROM generate_series(1, 99) g", ids["bob"].MemberID); err != nil {
		t.Fatal(err)
	}
	if code, m := postHookWith(t, inst.HTTP, `{"cwd":"/later2","status":"working"}`, hdr); code != 200 || m["pending"] != false {
		t.Fatalf("token signal with 100 of the member's waiting: %d %v, want pending false", code, m)
	}
	if n := count(true); n != 100 {
		t.Fatalf("%d token signals waiting, want 100", n)
	}
}

// A stranger spending requests on a member's cwd spends its own bucket, not the member's:
// the member's token hooks for that cwd still pass.
func TestStrangerCannotDrainAMembersHookBucket(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "HOOK_RATE_LIMIT_PER_MIN": "3"})
	ctx := within(t, 20*time.Second)
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b", Cwd: "/home/bob/proj"})
	token := hookToken(ctx, t, bob, false)
	var last int
	for range 5 {
		last, _ = postHook(t, inst.HTTP, `{"cwd":"/home/bob/proj","status":"idle"}`)
	}
	if last != 429 {
		t.Fatalf("the stranger's 5th request: %d, want 429", last)
	}
	if code, m := postHookWith(t, inst.HTTP, `{"cwd":"/home/bob/proj","status":"dnd"}`,
		map[string]string{"Authorization": "Bearer " + token}); code != 200 || m["presence_id"] != bob.Ack.Str("presenceId") {
		t.Fatalf("bob's own hook after the stranger's: %d %v", code, m)
	}
}
