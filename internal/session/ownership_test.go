package session_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Tests of issue 9's findings A (session takeover by another member), E (one member fills
// the mesh) and the hello_ack meshPolicy shape. Each fails on the broker before the fix.

// refused asserts that a Dial was refused with code (and, when msg is set, that message).
func refused(t *testing.T, what string, err error, code, msg string) {
	t.Helper()
	var rerr *client.RefusedError
	if !errors.As(err, &rerr) || rerr.Code != code || (msg != "" && rerr.Message != msg) {
		t.Fatalf("%s: got %v, want refused %s %q", what, err, code, msg)
	}
}

// stillOpen asserts that a client's socket has not been closed.
func stillOpen(t *testing.T, what string, c *client.Client) {
	t.Helper()
	select {
	case <-c.Done():
		t.Fatalf("%s: the owner's socket was closed: %v", what, c.Err())
	default:
	}
}

// Finding A: member M0, with its own valid hello, names member M1's live session key, M1's
// member key, or M1's Claude Code session id — on another instance than M1's socket. Each
// is refused unauthorized; M1's socket stays open, its presence is not taken over, and
// direct messages to M1's session key and member key still reach M1. After M1's session
// ended, its key still belongs to M1.
func TestAnotherMemberCannotTakeOrShadowASession(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "m0", "m1", "carol")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	_, k1 := client.NewKey()
	m1 := dial(ctx, t, i1.WS, ids["m1"], client.Options{SessionID: "m1-cc", SessionKey: k1})
	carol := dial(ctx, t, i1.WS, ids["carol"], client.Options{SessionID: "c"})

	for _, c := range []struct {
		name string
		opt  client.Options
		msg  string
	}{
		{"M1's live session key, without proof", client.Options{SessionID: "x", AnnounceKey: m1.SessionPub}, auth.MsgSessionKeyTaken},
		{"M1's member key as a session key", client.Options{SessionID: "y", AnnounceKey: ids["m1"].Pubkey}, auth.MsgSessionKeyIsKey},
		{"M1's Claude Code session id", client.Options{SessionID: "m1-cc"}, auth.MsgSessionIDTaken},
	} {
		_, err := client.Dial(ctx, i2.WS, ids["m0"], c.opt)
		refused(t, c.name, err, "unauthorized", c.msg)
		stillOpen(t, c.name, m1)
	}
	var epoch int64
	var owner string
	if err := d.Pool.QueryRow(ctx, "SELECT connection_epoch, member_id FROM presences WHERE id = $1", m1.Ack.Str("presenceId")).Scan(&epoch, &owner); err != nil {
		t.Fatal(err)
	}
	if epoch != 1 || owner != ids["m1"].MemberID {
		t.Fatalf("M1's presence was touched: epoch %d, member %s", epoch, owner)
	}

	// DMs to M1's session key and to its member key reach M1, and message_status says so.
	for _, target := range []string{m1.SessionPub, ids["m1"].Pubkey} {
		ack, err := carol.Send(ctx, client.Message{Target: target, Priority: "now", Nonce: "n", Ciphertext: "aGk="})
		if err != nil || ack["queued"] != true {
			t.Fatalf("send to %s: %v %v", target, ack, err)
		}
		p, err := m1.NextMessage(ctx)
		if err != nil || p.Str("messageId") != ack.Str("messageId") {
			t.Fatalf("M1 did not get the DM to %s: %v %v", target, p, err)
		}
	}

	// Ended, M1's session key is still M1's: it routes to M1 for PRESENCE_RETENTION.
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "M1's presence ended", func() bool {
		var ended bool
		_ = d.Pool.QueryRow(ctx, "SELECT ended_at IS NOT NULL FROM presences WHERE id = $1", m1.Ack.Str("presenceId")).Scan(&ended)
		return ended
	})
	_, err := client.Dial(ctx, i2.WS, ids["m0"], client.Options{SessionID: "z", AnnounceKey: m1.SessionPub})
	refused(t, "M1's ended session key", err, "unauthorized", auth.MsgSessionKeyTaken)
	// So is its Claude Code session id: squatting it would lock M1's next reconnect out.
	_, err = client.Dial(ctx, i2.WS, ids["m0"], client.Options{SessionID: "m1-cc"})
	refused(t, "M1's ended session's id", err, "unauthorized", auth.MsgSessionIDTaken)
	// M1 itself takes its key and id back.
	back, err := client.Dial(ctx, i2.WS, ids["m1"], client.Options{SessionID: "m1-cc", SessionKey: k1})
	if err != nil {
		t.Fatalf("M1 reconnecting with its own key: %v", err)
	}
	back.Close()
	// A revoked member's ids are free again (the same person rejoining as a new member keeps
	// its Claude Code session).
	if _, err := admin.RevokeMember(ctx, d.Pool, ids["m1"].MeshID, ids["m1"].MemberID, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "M1's presences ended by the revocation", func() bool {
		var n int
		_ = d.Pool.QueryRow(ctx, "SELECT count(*) FROM presences WHERE member_id = $1 AND ended_at IS NULL", ids["m1"].MemberID).Scan(&n)
		return n == 0
	})
	again, err := client.Dial(ctx, i2.WS, ids["m0"], client.Options{SessionID: "m1-cc", SessionKey: k1})
	if err != nil {
		t.Fatalf("a revoked member's session id and key for another member: %v", err)
	}
	again.Close()
}

// A session key proven with sessionSig is taken over only by a hello that proves it again,
// even by its own member.
func TestProvenSessionKeyNeedsProofToBeTakenOver(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	_, key := client.NewKey()
	first, err := client.Dial(ctx, i1.WS, ids["bob"], client.Options{SessionID: "b", SessionKey: key, Proof: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionID: "b", AnnounceKey: first.SessionPub})
	refused(t, "unproven takeover", err, "bad_session_proof", auth.MsgProofRequired)
	stillOpen(t, "unproven takeover", first)
	second, err := client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionID: "b", SessionKey: key, Proof: true})
	if err != nil {
		t.Fatalf("proven takeover: %v", err)
	}
	defer second.Close()
	if second.Ack.Str("presenceId") != first.Ack.Str("presenceId") {
		t.Fatal("a proven takeover got a new presence")
	}
	select {
	case <-first.Done():
	case <-ctx.Done():
		t.Fatal("the replaced socket was not closed")
	}
}

// A member key is its member's alone: a direct message to it reaches that member's sessions
// even when another member's presence carries that key as its session key (stored before
// the hello refused such keys).
func TestDirectMessageToAMemberKeyReachesOnlyThatMember(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "m0", "m1", "carol")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	_, k0 := client.NewKey()
	m0 := dial(ctx, t, inst.WS, ids["m0"], client.Options{SessionID: "m0", SessionKey: k0})
	// The shadow: M0's presence announces M1's member key (the broker before the fix took it).
	if _, err := d.Pool.Exec(ctx, "UPDATE presences SET session_pubkey = $2, identity_key = 's:' || $2 WHERE id = $1",
		m0.Ack.Str("presenceId"), ids["m1"].Pubkey); err != nil {
		t.Fatal(err)
	}
	m1 := dial(ctx, t, inst.WS, ids["m1"], client.Options{SessionID: "m1"})
	carol := dial(ctx, t, inst.WS, ids["carol"], client.Options{SessionID: "c"})
	ack, err := carol.Send(ctx, client.Message{Target: ids["m1"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "aGk="})
	if err != nil || ack["queued"] != true {
		t.Fatalf("%v %v", ack, err)
	}
	if p, err := m1.NextMessage(ctx); err != nil || p.Str("messageId") != ack.Str("messageId") {
		t.Fatalf("M1 did not get the DM to its member key: %v %v", p, err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if p, err := m0.NextMessage(short); err == nil {
		t.Fatalf("M0 got a DM addressed to M1's member key: %v", p)
	}
}

// Finding E: one member opening sessions fills only its own share. At
// MAX_SESSIONS_PER_MEMBER its next new session is refused capacity while other members
// connect; dropped sessions count for their grace window (for their member only); and a
// member can open only MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN sessions a minute.
func TestOneMemberCannotFillTheMesh(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "hog", "bob", "carol")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "MAX_SESSIONS_PER_MEMBER": "3",
		"MAX_CONNECTIONS_PER_MESH": "10", "MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN": "5"})
	ctx := within(t, 30*time.Second)
	var hogs []*client.Client
	for i := range 3 {
		c, err := client.Dial(ctx, inst.WS, ids["hog"], client.Options{SessionID: "hog-" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	_, err := client.Dial(ctx, inst.WS, ids["hog"], client.Options{SessionID: "hog-d"})
	refused(t, "the member's 4th session", err, "capacity", auth.MsgMemberFull)
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "bob"})
	if err != nil {
		t.Fatalf("another member locked out: %v", err)
	}
	defer bob.Close()
	for _, c := range hogs {
		_ = c.Drop() // no close frame: each presence keeps its grace window
	}
	waitFor(t, ctx, "the hog's sessions in their grace window", func() bool {
		var n int
		_ = d.Pool.QueryRow(ctx, "SELECT count(*) FROM presences WHERE member_id = $1 AND disconnected_at IS NOT NULL AND ended_at IS NULL", ids["hog"].MemberID).Scan(&n)
		return n == 3
	})
	_, err = client.Dial(ctx, inst.WS, ids["hog"], client.Options{SessionID: "hog-e"})
	refused(t, "a new session while three wait in their grace window", err, "capacity", auth.MsgMemberFull)
	carol, err := client.Dial(ctx, inst.WS, ids["carol"], client.Options{SessionID: "carol"})
	if err != nil {
		t.Fatalf("another member locked out by dropped sessions: %v", err)
	}
	defer carol.Close()
	// A reconnect of a dropped session is a takeover, not a new session: allowed.
	back, err := client.Dial(ctx, inst.WS, ids["hog"], client.Options{SessionID: "hog-a"})
	if err != nil {
		t.Fatalf("reconnect inside the grace window at the member's cap: %v", err)
	}
	back.Close()

	// The rate: bob opens and closes sessions; the 5th new one this minute is its last.
	for i := range 4 { // bob's first session above was the 1st
		c, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "bob-r" + string(rune('a'+i))})
		if err != nil {
			t.Fatalf("bob's new session %d: %v", i+2, err)
		}
		c.Close()
		// Closed means ended (not counted against the member's 3) once the broker has seen
		// the close: wait for it, so that only the rate can refuse the next one.
		waitFor(t, ctx, "bob's closed session ended", func() bool {
			var n int
			_ = d.Pool.QueryRow(ctx, "SELECT count(*) FROM presences WHERE member_id = $1 AND ended_at IS NULL", ids["bob"].MemberID).Scan(&n)
			return n == 1
		})
	}
	_, err = client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "bob-over"})
	refused(t, "bob's 6th new session in a minute", err, "capacity", auth.MsgMemberTooFast)
}

// hello_ack.meshPolicy is {selfEditable: {displayName, roleTag, groups, messageMode}}.
func TestHelloAckMeshPolicyShape(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b"})
	policy, _ := bob.Ack["meshPolicy"].(map[string]any)
	se, _ := policy["selfEditable"].(map[string]any)
	for _, k := range []string{"displayName", "roleTag", "groups", "messageMode"} {
		if se[k] != true {
			t.Fatalf("meshPolicy %v: selfEditable.%s is not true", bob.Ack["meshPolicy"], k)
		}
	}
	if len(policy) != 1 {
		t.Fatalf("meshPolicy has fields besides selfEditable: %v", policy)
	}
}

// dial connects a peer that the test closes when it ends.
func dial(ctx context.Context, t *testing.T, url string, id client.Identity, opt client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, url, id, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metricsText returns an instance's /metrics body.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// closeStatus dials a raw socket (no hello) and returns how the broker closes it after the
// frames are sent.
func closeStatus(ctx context.Context, t *testing.T, url string, frames ...string) (websocket.StatusCode, string) {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for _, f := range frames {
		if err := conn.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
			break
		}
	}
	for {
		if _, _, err := conn.Read(ctx); err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return -1, err.Error()
		}
	}
}

// Every hello that writes draws on its member's budget, takeovers included (each one an audit
// event kept for ever): a member looping takeovers of one identity is refused after 30.
func TestTakeoverLoopIsBounded(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	_, key := client.NewKey()
	for i := range 60 {
		c, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b", SessionKey: key})
		if err != nil {
			refused(t, "a takeover loop", err, "capacity", auth.MsgMemberHellos)
			if i < 30 {
				t.Fatalf("refused after %d hellos, want at least the burst of 30", i)
			}
			return
		}
		_ = c.Drop()
		time.Sleep(2 * time.Millisecond) // a new millisecond: a hello signed in the same one is a replay
	}
	t.Fatal("60 takeovers in a row were all accepted")
}

// Hellos that pass the checks needing no database (a stranger signs with a key of its own
// making) are limited per client IP before they cost a transaction: refused rate_limit with
// a 1013 close.
func TestSelfSignedHellosAreLimitedPerIP(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "HELLO_IP_RATE_LIMIT_PER_MIN": "5"})
	ctx := within(t, 20*time.Second)
	stranger := ids["bob"]
	for i := range 6 {
		stranger.Pubkey, stranger.Secret = client.NewKey()
		_, err := client.Dial(ctx, inst.WS, stranger, client.Options{SessionID: "s"})
		want := "unauthorized"
		if i == 5 {
			want = "rate_limit"
		}
		refused(t, "a self-signed hello", err, want, "")
	}
	if !strings.Contains(metricsText(t, inst.HTTP), `broker_connections_rejected_total{reason="rate_limit"} 1`) {
		t.Fatal("the refusal is not counted")
	}
}
