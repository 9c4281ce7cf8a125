package session_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func postHook(t *testing.T, base string, body string) (int, map[string]any) {
	t.Helper()
	return postHookWith(t, base, body, nil)
}

// postHookWith posts a hook with extra headers (Authorization, Fly-Client-IP).
func postHookWith(t *testing.T, base string, body string, headers map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/hook/set-status", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("hook answer is not JSON: %q", raw)
	}
	return resp.StatusCode, m
}

func presenceStatus(t *testing.T, d *testdb.DB, id string) (status, source string) {
	t.Helper()
	if err := d.Pool.QueryRow(context.Background(), "SELECT status, status_source FROM presences WHERE id = $1", id).Scan(&status, &source); err != nil {
		t.Fatal(err)
	}
	return
}

// The end-to-end case: a next message held while the recipient works is released
// when a hook on the *other* instance sets it idle.
func TestHookOnOtherInstanceReleasesHeldMessage(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	alice, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, i1.WS, ids["bob"], client.Options{SessionID: "cc-session-bob", Cwd: "/work/bob", Pid: 777})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	// Claude Code's own hook body, straight at the broker, without credentials (working and
	// idle need none; the answer does not say whether a session matched).
	if code, m := postHook(t, i2.HTTP, `{"session_id":"cc-session-bob","cwd":"/elsewhere","hook_event_name":"UserPromptSubmit"}`); code != 200 || m["ok"] != true || len(m) != 1 {
		t.Fatalf("working hook: %d %v", code, m)
	}
	if st, src := presenceStatus(t, d, bob.Ack.Str("presenceId")); st != "working" || src != "hook" {
		t.Fatalf("after hook: %s/%s", st, src)
	}
	ack, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "next", Nonce: "n", Ciphertext: "aGVsZA=="})
	if err != nil || ack["queued"] != true {
		t.Fatalf("%v %v", ack, err)
	}
	held, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel()
	if p, err := bob.NextMessage(held); err == nil {
		t.Fatalf("pushed while working: %v", p)
	}
	if code, m := postHook(t, i2.HTTP, `{"cwd":"/work/bob","pid":777,"status":"idle"}`); code != 200 || m["ok"] != true {
		t.Fatalf("idle hook: %d %v", code, m)
	}
	if p, err := bob.NextMessage(ctx); err != nil || p.Str("messageId") != ack.Str("messageId") {
		t.Fatalf("not released by the hook: %v %v", p, err)
	}
}

func TestHookRules(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "HOOK_RATE_LIMIT_PER_MIN": "5", "MAX_MESSAGE_BYTES": "2048"})
	ctx := within(t, 20*time.Second)

	// Bad input: clear errors, nothing stored.
	if code, m := postHook(t, inst.HTTP, `{"cwd":`); code != 400 || m["error"] != "invalid JSON" {
		t.Fatalf("malformed: %d %v", code, m)
	}
	if code, m := postHook(t, inst.HTTP, `{"status":"idle"}`); code != 400 || m["error"] != "cwd and status required" {
		t.Fatalf("no cwd: %d %v", code, m)
	}
	if code, m := postHook(t, inst.HTTP, `{"cwd":"/x","status":"asleep"}`); code != 400 {
		t.Fatalf("bad status: %d %v", code, m)
	}
	if code, m := postHook(t, inst.HTTP, `{"cwd":"`+strings.Repeat("x", 3000)+`","status":"idle"}`); code != 413 {
		t.Fatalf("oversized: %d %v", code, m)
	}
	if code, m := postHook(t, inst.HTTP, `{"session_id":"s","cwd":"/x","hook_event_name":"Notification"}`); code != 200 || m["ignored"] != true {
		t.Fatalf("unmapped event: %d %v", code, m)
	}

	// First-turn race: a hook before the session connects is kept and applied on connect.
	if code, m := postHook(t, inst.HTTP, `{"cwd":"/proj","pid":4242,"status":"working"}`); code != 200 || m["ok"] != true {
		t.Fatalf("pending: %d %v", code, m)
	}
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b", Cwd: "/proj", Pid: 4242})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	pid := bob.Ack.Str("presenceId")
	if st, src := presenceStatus(t, d, pid); st != "working" || src != "hook" {
		t.Fatalf("pending hook not applied on connect: %s/%s", st, src)
	}

	// DND is never cleared by a hook.
	if err := bob.Write(ctx, map[string]any{"type": "set_status", "status": "dnd"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if st, _ := presenceStatus(t, d, pid); st == "dnd" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("set_status dnd not stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := postHook(t, inst.HTTP, `{"cwd":"/proj","pid":4242,"status":"idle"}`); code != 200 {
		t.Fatal(code)
	}
	if st, _ := presenceStatus(t, d, pid); st != "dnd" {
		t.Fatalf("hook cleared dnd: %s", st)
	}

	// Rate limit per (pid, cwd): 5 a minute here; another key has its own bucket.
	codes := []int{}
	for range 6 {
		code, _ := postHook(t, inst.HTTP, `{"cwd":"/rl","pid":1,"status":"idle"}`)
		codes = append(codes, code)
	}
	if codes[4] != 200 || codes[5] != 429 {
		t.Fatalf("rate limit codes %v, want the 6th to be 429", codes)
	}
	if code, _ := postHook(t, inst.HTTP, `{"cwd":"/rl","pid":2,"status":"idle"}`); code != 200 {
		t.Fatalf("other bucket: %d", code)
	}
}

// A SessionEnd hook ends the presence at once: its peers see peer_left immediately.
func TestHookSessionEnd(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	alice, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "bob-cc", Cwd: "/b"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	token := hookToken(ctx, t, bob, false)
	if code, m := postHookWith(t, inst.HTTP, `{"session_id":"bob-cc","cwd":"/b","hook_event_name":"SessionEnd"}`,
		map[string]string{"Authorization": "Bearer " + token}); code != 200 || m["ok"] != true {
		t.Fatalf("%d %v", code, m)
	}
	for {
		p, err := alice.Next(ctx, "push")
		if err != nil {
			t.Fatalf("no peer_left after SessionEnd: %v", err)
		}
		if data, _ := p["eventData"].(map[string]any); p.Str("event") == "peer_left" && data["name"] == "bob" {
			break
		}
	}
}

// The status rules, as SQL, on stored presences.
func TestStatusRulesAndTTLSweep(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "STATUS_TTL_SECONDS": "60"})
	ctx := within(t, 20*time.Second)
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b", Cwd: "/b", Pid: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	pid := bob.Ack.Str("presenceId")
	q := db.New(d.Pool)
	write := func(status, source string) {
		t.Helper()
		if _, err := q.WriteStatus(ctx, db.WriteStatusParams{ID: pid, Status: status, Source: source, FreshSeconds: 30}); err != nil {
			t.Fatal(err)
		}
	}
	backdate := func(secs int) {
		t.Helper()
		if _, err := d.Pool.Exec(ctx, "UPDATE presences SET status_updated_at = now() - make_interval(secs => $2) WHERE id = $1", pid, secs); err != nil {
			t.Fatal(err)
		}
	}
	write("working", "hook")
	write("working", "jsonl") // lower rank while the hook is fresh: source stays hook
	if st, src := presenceStatus(t, d, pid); st != "working" || src != "hook" {
		t.Fatalf("fresh hook outranks jsonl: %s/%s", st, src)
	}
	backdate(120)
	write("working", "jsonl") // the hook went stale: the source decays
	if _, src := presenceStatus(t, d, pid); src != "jsonl" {
		t.Fatalf("stale hook should decay to jsonl, got %s", src)
	}
	write("working", "manual")
	if _, src := presenceStatus(t, d, pid); src != "manual" {
		t.Fatalf("manual outranks jsonl: %s", src)
	}
	write("idle", "jsonl") // a different status always wins
	if st, src := presenceStatus(t, d, pid); st != "idle" || src != "jsonl" {
		t.Fatalf("different status: %s/%s", st, src)
	}

	// TTL sweep: working beyond the TTL becomes idle/jsonl; dnd is left alone.
	write("working", "hook")
	backdate(120)
	other := bob.Ack.Str("presenceId") + "-dnd"
	if _, err := d.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, status, status_updated_at)
		SELECT $2, mesh_id, member_id, 'k-dnd', 's', 1, '/', 'dnd', now() - interval '300 seconds' FROM presences WHERE id = $1`, pid, other); err != nil {
		t.Fatal(err)
	}
	flipped, err := q.SweepWorkingToIdle(ctx, 60)
	if err != nil || len(flipped) != 1 || flipped[0] != pid {
		t.Fatalf("sweep flipped %v %v", flipped, err)
	}
	if st, src := presenceStatus(t, d, pid); st != "idle" || src != "jsonl" {
		t.Fatalf("after sweep: %s/%s", st, src)
	}
	if st, _ := presenceStatus(t, d, other); st != "dnd" {
		t.Fatalf("sweep touched dnd: %s", st)
	}
}

// hookToken asks a session for its member's hook token (rotate: a new one).
func hookToken(ctx context.Context, t *testing.T, c *client.Client, rotate bool) string {
	t.Helper()
	req := map[string]any{"type": "hook_token", "_reqId": "ht"}
	if rotate {
		req["rotate"] = true
	}
	if err := c.Write(ctx, req); err != nil {
		t.Fatal(err)
	}
	f, err := c.Next(ctx, "hook_token")
	if err != nil {
		t.Fatal(err)
	}
	if f.Str("_reqId") != "ht" || !strings.HasPrefix(f.Str("token"), "mbh_") {
		t.Fatalf("hook_token reply: %v", f)
	}
	return f.Str("token")
}
