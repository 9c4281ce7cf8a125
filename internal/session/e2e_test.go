package session_test

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/envelope"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func seal(t *testing.T, msg string, recipientEdHex string, senderSecret ed25519.PrivateKey) (nonce, ciphertext string) {
	t.Helper()
	n, ct, err := envelope.Seal([]byte(msg), recipientEdHex, senderSecret)
	if err != nil {
		t.Fatal(err)
	}
	return n, ct
}

func open(t *testing.T, push client.Frame, recipientSecret ed25519.PrivateKey) string {
	t.Helper()
	pt, err := envelope.Open(push.Str("nonce"), push.Str("ciphertext"), push.Str("senderPubkey"), recipientSecret)
	if err != nil {
		t.Fatalf("push does not decrypt with senderPubkey %s: %v", push.Str("senderPubkey"), err)
	}
	return string(pt)
}

func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Two instances on one database: a DM from a socket on instance 1 reaches a socket on
// instance 2, end-to-end encrypted, and the ciphertext passes through untouched.
func TestDirectMessageAcrossInstances(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)

	_, aliceSess := client.NewKey()
	_, bobSess := client.NewKey()
	alice, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionKey: aliceSess, Proof: true, Cwd: "/a", Pid: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionKey: bobSess, Proof: true, Cwd: "/b", Pid: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if bob.Ack.Str("presenceId") == "" || bob.Ack.Str("memberDisplayName") != "bob" {
		t.Fatalf("hello_ack %v", bob.Ack)
	}

	nonce, ct := seal(t, "hello bob, from alice", bob.SessionPub, aliceSess)
	ack, err := alice.Send(ctx, client.Message{Target: bob.SessionPub, Priority: "now", Nonce: nonce, Ciphertext: ct})
	if err != nil {
		t.Fatal(err)
	}
	if ack["queued"] != true || ack.Str("messageId") == "" {
		t.Fatalf("ack %v", ack)
	}
	push, err := bob.NextMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if push.Str("messageId") != ack.Str("messageId") || push.Str("senderPubkey") != alice.SessionPub ||
		push.Str("senderMemberPubkey") != ids["alice"].Pubkey || push.Str("nonce") != nonce || push.Str("ciphertext") != ct {
		t.Fatalf("push %v", push)
	}
	if got := open(t, push, bobSess); got != "hello bob, from alice" {
		t.Fatalf("decrypted %q", got)
	}

	// A DM to bob's member key also reaches bob's session.
	nonce, ct = seal(t, "to your member key", bob.SessionPub, aliceSess)
	if ack, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: nonce, Ciphertext: ct}); err != nil || ack["queued"] != true {
		t.Fatalf("member-key DM: %v %v", ack, err)
	}
	if push, err := bob.NextMessage(ctx); err != nil || open(t, push, bobSess) != "to your member key" {
		t.Fatalf("member-key push: %v %v", push, err)
	}

	// message_status: one recipient, delivered.
	if err := alice.Write(ctx, map[string]any{"type": "message_status", "messageId": ack.Str("messageId"), "_reqId": "ms"}); err != nil {
		t.Fatal(err)
	}
	for {
		ms, err := alice.Next(ctx, "message_status_result")
		if err != nil {
			t.Fatal(err)
		}
		recips, _ := ms["recipients"].([]any)
		if ms["delivered"] == true && len(recips) == 1 && recips[0].(map[string]any)["status"] == "delivered" {
			break // delivery is marked right after the write: ask again until it is
		}
		time.Sleep(20 * time.Millisecond)
		_ = alice.Write(ctx, map[string]any{"type": "message_status", "messageId": ack.Str("messageId")})
	}
	if err := alice.Write(ctx, map[string]any{"type": "message_status", "messageId": "nope", "_reqId": "x"}); err != nil {
		t.Fatal(err)
	}
	if e, err := alice.Next(ctx, "error"); err != nil || e.Str("code") != "not_found" || e.Str("_reqId") != "x" {
		t.Fatalf("unknown message: %v %v", e, err)
	}

	// list_peers on instance 1 sees both sessions, across instances.
	if err := alice.Write(ctx, map[string]any{"type": "list_peers", "_reqId": "r1"}); err != nil {
		t.Fatal(err)
	}
	pl, err := alice.Next(ctx, "peers_list")
	if err != nil {
		t.Fatal(err)
	}
	peers, _ := pl["peers"].([]any)
	if len(peers) != 2 || pl.Str("_reqId") != "r1" {
		t.Fatalf("peers_list %v", pl)
	}
}

// Broadcast reaches every other member's sessions on both instances, never the sender's own.
func TestBroadcastAcrossInstances(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob", "carol")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	dial := func(who string, url string, sess string) *client.Client {
		c, err := client.Dial(ctx, url, ids[who], client.Options{SessionID: sess, Cwd: "/" + who})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice := dial("alice", i1.WS, "a1")
	alice2 := dial("alice", i2.WS, "a2") // the sender's sibling session
	bob := dial("bob", i2.WS, "b1")
	carol := dial("carol", i1.WS, "c1")

	ack, err := alice.Send(ctx, client.Message{Target: "*", Priority: "next", Nonce: "n", Ciphertext: "YnJvYWRjYXN0"})
	if err != nil || ack["queued"] != true {
		t.Fatalf("broadcast ack %v %v", ack, err)
	}
	for _, c := range []*client.Client{bob, carol} {
		p, err := c.NextMessage(ctx)
		if err != nil || p.Str("messageId") != ack.Str("messageId") || p.Str("ciphertext") != "YnJvYWRjYXN0" {
			t.Fatalf("broadcast push %v %v", p, err)
		}
	}
	// The sibling must get nothing but system events.
	quiet, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if f, err := alice2.NextMessage(quiet); err == nil {
		t.Fatalf("sender's sibling session received its own broadcast: %v", f)
	}
}

// A next-priority DM is held while the recipient is working and released the moment it
// goes idle, whichever instance it is on.
func TestHeldMessageReleasedOnIdle(t *testing.T) {
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
	bob, err := client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if err := bob.Write(ctx, map[string]any{"type": "set_status", "status": "working"}); err != nil {
		t.Fatal(err)
	}
	// Wait until the status is stored, via list_peers (a few a second: the session's request
	// budget refuses a tight loop of them).
	for {
		_ = alice.Write(ctx, map[string]any{"type": "list_peers"})
		pl, err := alice.Next(ctx, "peers_list")
		if err != nil {
			t.Fatal(err)
		}
		working := false
		for _, p := range pl["peers"].([]any) {
			if pm := p.(map[string]any); pm["status"] == "working" {
				working = true
			}
		}
		if working {
			break
		}
		time.Sleep(300 * time.Millisecond) // list_peers costs 5 of 20 tokens a second
	}
	ack, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "next", Nonce: "n", Ciphertext: "aGVsZA=="})
	if err != nil || ack["queued"] != true {
		t.Fatalf("ack %v %v", ack, err)
	}
	held, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	if p, err := bob.NextMessage(held); err == nil {
		t.Fatalf("next-priority message pushed while working: %v", p)
	}
	if err := bob.Write(ctx, map[string]any{"type": "set_status", "status": "idle"}); err != nil {
		t.Fatal(err)
	}
	if p, err := bob.NextMessage(ctx); err != nil || p.Str("messageId") != ack.Str("messageId") {
		t.Fatalf("held message not released on idle: %v %v", p, err)
	}
}

// A reconnect of the same session identity on the other instance takes the presence over:
// the old socket is closed with session_replaced, and no peer_left/peer_joined is announced.
func TestTakeoverAcrossInstances(t *testing.T) { testTakeover(t, false) }

// On one instance the old socket is told too (the kick that follows the takeover finds the
// new socket in the registry, so the registry closes the old one itself).
func TestTakeoverOnOneInstance(t *testing.T) { testTakeover(t, true) }

func testTakeover(t *testing.T, sameInstance bool) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	_, sess := client.NewKey()
	watcher, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	first, err := client.Dial(ctx, i1.WS, ids["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := watcher.Next(ctx, "push"); err != nil || p.Str("event") != "peer_joined" {
		t.Fatalf("peer_joined for the first socket: %v %v", p, err)
	}
	url := i2.WS
	if sameInstance {
		url = i1.WS
	}
	second, err := client.Dial(ctx, url, ids["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.Ack.Str("presenceId") != first.Ack.Str("presenceId") {
		t.Fatalf("takeover created a new presence: %s vs %s", second.Ack.Str("presenceId"), first.Ack.Str("presenceId"))
	}
	select {
	case <-first.Done():
	case <-ctx.Done():
		t.Fatal("old socket not closed after takeover")
	}
	if err := first.Err(); err == nil || !contains(err.Error(), "session_replaced") {
		t.Fatalf("old socket closed with %v, want session_replaced", err)
	}
	quiet, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if p, err := watcher.Next(quiet, "push"); err == nil {
		t.Fatalf("takeover announced %v", p)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// set_visible false: the others are told (not the session itself), the hidden session is
// left out of their list_peers and of broadcasts, and set_visible is acked.
func TestSetVisible(t *testing.T) {
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
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if err := bob.Write(ctx, map[string]any{"type": "set_visible", "visible": false, "_reqId": "v1"}); err != nil {
		t.Fatal(err)
	}
	ack, err := bob.Next(ctx, "ack")
	if err != nil || ack.Str("_reqId") != "v1" || ack["queued"] != false {
		t.Fatalf("set_visible ack: %v %v", ack, err)
	}
	for {
		p, err := alice.Next(ctx, "push")
		if err != nil {
			t.Fatal(err)
		}
		if p.Str("event") == "peer_hidden" {
			break
		}
	}
	_ = alice.Write(ctx, map[string]any{"type": "list_peers"})
	pl, err := alice.Next(ctx, "peers_list")
	if err != nil {
		t.Fatal(err)
	}
	if peers := pl["peers"].([]any); len(peers) != 1 {
		t.Fatalf("alice sees %d peers, want only herself while bob is hidden", len(peers))
	}
	if ack, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "aGk="}); ack["queued"] != true {
		t.Fatalf("broadcast: %v", ack)
	}
	quiet, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	for {
		p, err := bob.Next(quiet, "push")
		if err != nil {
			break
		}
		if p.Str("subtype") != "system" {
			t.Fatalf("hidden session received a broadcast: %v", p)
		}
		if p.Str("event") == "peer_hidden" {
			t.Fatalf("the hidden session was told about itself: %v", p)
		}
	}
}
