package session_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/protocol"
	"github.com/meshbroker/meshbroker/internal/session"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Tests of issue 9's finding C: what a member can store is bounded, each refusal a clear
// error frame with nothing changed, and no mesh content can make a reply (list_peers above
// all) grow past its cap or cut anybody's socket.

// nextError waits for the next error frame.
func nextError(t *testing.T, c *client.Client, ctx context.Context) client.Frame {
	t.Helper()
	f, err := c.Next(ctx, "error")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMemberStateIsBounded(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b"})
	pid := bob.Ack.Str("presenceId")

	over := func(n int) string { return strings.Repeat("x", n) }
	for _, c := range []struct {
		frame map[string]any
		want  string
	}{
		{map[string]any{"type": "join_group", "name": over(protocol.MaxGroupNameBytes + 1)}, "group name is 65 bytes"},
		{map[string]any{"type": "join_group", "name": ""}, "empty name"},
		{map[string]any{"type": "set_summary", "summary": over(protocol.MaxSummaryBytes + 1)}, "summary is 1025 bytes"},
		{map[string]any{"type": "set_profile", "bio": over(protocol.MaxBioBytes + 1)}, "bio is 1025 bytes"},
		{map[string]any{"type": "set_profile", "capabilities": strings.Split(over(protocol.MaxCapabilities+1), "")}, "capabilities has 33 entries"},
		{map[string]any{"type": "set_stats", "stats": func() map[string]int {
			m := map[string]int{}
			for i := range protocol.MaxStatsKeys + 1 {
				m[over(i+1)] = i
			}
			return m
		}()}, "stats has 17 entries"},
		{map[string]any{"type": "set_status", "status": "asleep"}, "status must be"},
	} {
		c.frame["_reqId"] = "r"
		if err := bob.Write(ctx, c.frame); err != nil {
			t.Fatal(err)
		}
		f := nextError(t, bob, ctx)
		if !strings.Contains(f.Str("message"), c.want) || f.Str("_reqId") != "r" {
			t.Fatalf("%v: error %v, want a message with %q", c.frame["type"], f, c.want)
		}
	}
	var summary *string
	var profile, stats string
	if err := d.Pool.QueryRow(ctx, "SELECT summary, profile::text, stats::text FROM presences WHERE id = $1", pid).Scan(&summary, &profile, &stats); err != nil {
		t.Fatal(err)
	}
	if summary != nil || profile != "{}" || stats != "{}" {
		t.Fatalf("a refused frame changed the presence: summary %v, profile %s, stats %s", summary, profile, stats)
	}

	// Groups: 32, then the 33rd is refused; joining an existing group again is fine.
	for i := range protocol.MaxGroups {
		if err := bob.Write(ctx, map[string]any{"type": "join_group", "name": "g" + string(rune('A'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	_ = bob.Write(ctx, map[string]any{"type": "join_group", "name": "one-too-many", "_reqId": "g"})
	if f := nextError(t, bob, ctx); f.Str("code") != protocol.CodeTooLarge || f.Str("_reqId") != "g" {
		t.Fatalf("33rd group: %v", f)
	}
	var groups []protocol.Group
	var raw []byte
	if err := d.Pool.QueryRow(ctx, "SELECT groups FROM presences WHERE id = $1", pid).Scan(&raw); err != nil || json.Unmarshal(raw, &groups) != nil || len(groups) != protocol.MaxGroups {
		t.Fatalf("groups after the refusal: %d (%v)", len(groups), err)
	}

	// A hello with a matched field over its bound is refused malformed, naming the field; an
	// informational one is cut (a Bedrock model ARN in CLAUDE_MODEL must not lock a client out).
	_, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a", Cwd: "/" + over(protocol.MaxCwdBytes)})
	refused(t, "a 2 KiB+ cwd", err, "malformed", "hello rejected: malformed (cwd is 2049 bytes; the limit is 2048)")
	long, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a", Model: over(1000), DisplayName: over(500)})
	if err != nil {
		t.Fatalf("a hello with a 1000-byte model: %v", err)
	}
	defer long.Close()
	var model, name string
	if err := d.Pool.QueryRow(ctx, "SELECT model, display_name FROM presences WHERE id = $1", long.Ack.Str("presenceId")).Scan(&model, &name); err != nil ||
		len(model) != protocol.MaxModelBytes || len(name) != protocol.MaxDisplayNameBytes {
		t.Fatalf("stored model of %d bytes and name of %d (%v), want them cut to %d and %d", len(model), len(name), err, protocol.MaxModelBytes, protocol.MaxDisplayNameBytes)
	}
}

// State stored before the bounds existed: a peer state with 8 MB of groups no longer fails
// the member's hello (the restored groups are cut to the bounds), and presences with huge
// summaries make list_peers stop at its cap, saying truncated, instead of cutting the asking
// socket.
func TestStoredOversizedStateIsCutOnTheWayOut(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob", "carol")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	if _, err := d.Pool.Exec(ctx, `INSERT INTO peer_states (mesh_id, member_id, groups)
		SELECT $1, $2, jsonb_agg(jsonb_build_object('name', repeat('g', 60000) || g)) FROM generate_series(1, 140) g`,
		ids["bob"].MeshID, ids["bob"].MemberID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `INSERT INTO peer_states (mesh_id, member_id, groups) VALUES ($1, $2,
		(SELECT jsonb_agg(jsonb_build_object('name', 'ok' || g)) FROM generate_series(1, 40) g))
		ON CONFLICT DO NOTHING`, ids["alice"].MeshID, ids["alice"].MemberID); err != nil {
		t.Fatal(err)
	}
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b"})
	if err != nil {
		t.Fatalf("hello with 8 MB of saved groups: %v", err)
	}
	defer bob.Close()
	if rg, _ := bob.Ack["restoredGroups"].([]any); len(rg) != 0 {
		t.Fatalf("restored %d oversized groups", len(rg))
	}
	alice := dial(ctx, t, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	if rg, _ := alice.Ack["restoredGroups"].([]any); len(rg) != protocol.MaxGroups {
		t.Fatalf("restored %d of 40 saved groups, want the first %d", len(rg), protocol.MaxGroups)
	}

	// 40 presences with 100 KiB summaries each (4 MB): list_peers stops at 2 MiB.
	if _, err := d.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, summary)
		SELECT 'big' || g, $1, $2, 'big' || g, 'big' || g, 1, '/', repeat('s', 100000) FROM generate_series(1, 40) g`,
		ids["bob"].MeshID, ids["bob"].MemberID); err != nil {
		t.Fatal(err)
	}
	// Asked on both instances, by a peer of each.
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	carol := dial(ctx, t, i2.WS, ids["carol"], client.Options{SessionID: "c"})
	for _, c := range []*client.Client{alice, carol} {
		if err := c.Write(ctx, map[string]any{"type": "list_peers", "_reqId": "l"}); err != nil {
			t.Fatal(err)
		}
		f, err := c.Next(ctx, "peers_list")
		if err != nil {
			t.Fatalf("list_peers over a 4 MB mesh: %v", err)
		}
		raw, _ := json.Marshal(f)
		if f["truncated"] != true || len(raw) > session.MaxPeersListBytes {
			t.Fatalf("peers_list of %d bytes, truncated=%v: want at most %d and truncated", len(raw), f["truncated"], session.MaxPeersListBytes)
		}
		stillOpen(t, "list_peers", c)
	}
}

// Frames other than send draw on a per-session budget: a flood is refused with rate_limit
// errors (and changes nothing), the socket stays open.
func TestControlFramesAreRateLimited(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b"})
	for range 100 {
		if err := bob.Write(ctx, map[string]any{"type": "list_peers"}); err != nil {
			t.Fatal(err)
		}
	}
	if f := nextError(t, bob, ctx); f.Str("code") != protocol.CodeRateLimit {
		t.Fatalf("flood of list_peers: %v", f)
	}
	stillOpen(t, "a flood of list_peers", bob)
}

// audit_verify reads the whole chain: a session gets three at once and then one a second
// (the fourth of a burst is refused rate_limit), and verifications of one mesh asked for at
// the same time by several sessions share one run, each getting the result.
func TestAuditVerifyIsBudgeted(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "a", "b", "c")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	var cs []*client.Client
	for _, n := range []string{"a", "b", "c"} {
		c := dial(ctx, t, inst.WS, ids[n], client.Options{SessionID: n})
		cs = append(cs, c)
	}
	for _, c := range cs {
		if err := c.Write(ctx, map[string]any{"type": "audit_verify", "_reqId": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		f, err := c.Next(ctx, "audit_verify_result")
		if err != nil || f["valid"] != true {
			t.Fatalf("concurrent audit_verify: %v %v", f, err)
		}
	}
	a := cs[0]
	for range 3 {
		_ = a.Write(ctx, map[string]any{"type": "audit_verify"})
	}
	if f := nextError(t, a, ctx); f.Str("code") != protocol.CodeRateLimit {
		t.Fatalf("fourth audit_verify at once: %v, want rate_limit", f)
	}
}
