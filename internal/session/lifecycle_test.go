package session_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// A session that drops without a close frame and reconnects inside the grace window, to the
// other instance, receives every DM, group and broadcast message addressed to it meanwhile,
// and its peers see neither peer_left nor peer_joined.
func TestReconnectInsideGraceReceivesWhatWasSent(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	_, bobSess := client.NewKey()
	alice, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bobOpts := client.Options{SessionKey: bobSess, Groups: []map[string]string{{"name": "ops/eu"}}}
	bob, err := client.Dial(ctx, i1.WS, ids["bob"], bobOpts)
	if err != nil {
		t.Fatal(err)
	}
	presence := bob.Ack.Str("presenceId")
	if p, err := alice.Next(ctx, "push"); err != nil || p.Str("event") != "peer_joined" {
		t.Fatalf("bob's first connection not announced: %v %v", p, err)
	}
	_ = bob.Drop()
	time.Sleep(200 * time.Millisecond) // let instance 1 notice the drop

	var sent []string
	for _, m := range []client.Message{
		{Target: bob.SessionPub, Priority: "now", Nonce: "n1", Ciphertext: "c2Vzc2lvbg=="},
		{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n2", Ciphertext: "bWVtYmVy"},
		{Target: "@ops", Priority: "now", Nonce: "n3", Ciphertext: "Z3JvdXA="},
		{Target: "*", Priority: "low", Nonce: "n4", Ciphertext: "YnJvYWRjYXN0"},
	} {
		ack, err := alice.Send(ctx, m)
		if err != nil || ack["queued"] != true {
			t.Fatalf("send %v: %v %v", m.Target, ack, err)
		}
		sent = append(sent, ack.Str("messageId"))
	}

	back, err := client.Dial(ctx, i2.WS, ids["bob"], bobOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Ack.Str("presenceId") != presence {
		t.Fatalf("reconnect got presence %s, want %s", back.Ack.Str("presenceId"), presence)
	}
	got := map[string]bool{}
	for len(got) < len(sent) {
		p, err := back.NextMessage(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), len(sent), err)
		}
		if got[p.Str("messageId")] {
			t.Fatalf("duplicate push %s", p.Str("messageId"))
		}
		got[p.Str("messageId")] = true
	}
	for _, id := range sent {
		if !got[id] {
			t.Fatalf("message %s lost across the reconnect", id)
		}
	}
	quiet, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	for {
		p, err := alice.Next(quiet, "push")
		if err != nil {
			break
		}
		if ev := p.Str("event"); ev == "peer_left" || ev == "peer_joined" {
			t.Fatalf("a reconnect inside grace announced %s", ev)
		}
	}
}

// A client_ack client gets at-least-once delivery: a push it never acknowledged comes again
// after it reconnects; an acknowledged one does not.
func TestClientAckRedeliversUnacknowledged(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	opts := client.Options{SessionID: "bob-1", Capabilities: []string{"client_ack"}}
	alice, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], opts)
	if err != nil {
		t.Fatal(err)
	}
	ack1, _ := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "b25l"})
	ack2, _ := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "dHdv"})
	for range 2 {
		if _, err := bob.NextMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Acknowledge only the first, then crash.
	if err := bob.Write(ctx, map[string]any{"type": "client_ack", "messageId": ack1.Str("messageId")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	_ = bob.Drop()
	time.Sleep(200 * time.Millisecond)

	again, err := client.Dial(ctx, inst.WS, ids["bob"], opts)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	p, err := again.NextMessage(ctx)
	if err != nil || p.Str("messageId") != ack2.Str("messageId") {
		t.Fatalf("redelivery: %v %v (want %s)", p, err, ack2.Str("messageId"))
	}
	quiet, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if p, err := again.NextMessage(quiet); err == nil {
		t.Fatalf("acknowledged message delivered again: %v", p)
	}
}

// A normal close announces peer_left at once; a drop announces it when the grace window
// (here 1 s) ends.
func TestPeerLeftOnCloseAndAfterGrace(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob", "carol")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "PRESENCE_GRACE_SECONDS": "1"})
	ctx := within(t, 30*time.Second)
	alice, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	waitEvent := func(event, name string) {
		t.Helper()
		for {
			p, err := alice.Next(ctx, "push")
			if err != nil {
				t.Fatalf("waiting for %s of %s: %v", event, name, err)
			}
			if data, _ := p["eventData"].(map[string]any); p.Str("event") == event && data["name"] == name {
				return
			}
		}
	}
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent("peer_joined", "bob")
	closedAt := time.Now()
	_ = bob.Close()
	waitEvent("peer_left", "bob")
	t.Logf("peer_left after a normal close: %s", time.Since(closedAt).Round(time.Millisecond))

	carol, err := client.Dial(ctx, inst.WS, ids["carol"], client.Options{SessionID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent("peer_joined", "carol")
	dropped := time.Now()
	_ = carol.Drop()
	waitEvent("peer_left", "carol")
	if since := time.Since(dropped); since < time.Second {
		t.Fatalf("peer_left %s after a drop, before the 1 s grace window ended", since)
	}
	// Returning later is announced as peer_returned.
	back, err := client.Dial(ctx, inst.WS, ids["carol"], client.Options{SessionID: "c2"})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Ack["restored"] != true {
		t.Fatalf("hello_ack after a previous session: %v", back.Ack)
	}
	waitEvent("peer_returned", "carol")
}

func TestHandshakeRefusals(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "ALLOWED_ORIGINS": "https://app.example"})
	ctx := within(t, 20*time.Second)

	// A wrong signature: error frame, then close 1008 with the code as reason.
	bad := ids["alice"]
	_, bad.Secret = client.NewKey()
	_, err := client.Dial(ctx, inst.WS, bad, client.Options{SessionID: "x"})
	if rerr, ok := err.(*client.RefusedError); !ok || rerr.Code != "bad_signature" {
		t.Fatalf("bad signature: %v", err)
	}

	// A frame before hello gets no_hello and the socket stays open.
	conn, _, err := websocket.Dial(ctx, inst.WS+"?v=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Write(ctx, websocket.MessageText, []byte(`{"type":"list_peers","_reqId":"q"}`))
	_, data, err := conn.Read(ctx)
	if err != nil || !strings.Contains(string(data), `"no_hello"`) || !strings.Contains(string(data), `"_reqId":"q"`) {
		t.Fatalf("no_hello: %s %v", data, err)
	}
	// Invalid UTF-8 closes with 1007 before any decoding.
	_ = conn.Write(ctx, websocket.MessageText, []byte{'{', 0xff, '}'})
	_, _, err = conn.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("invalid UTF-8: %v", err)
	}

	// Browsers from origins not on ALLOWED_ORIGINS are refused before the upgrade.
	_, resp, err := websocket.Dial(ctx, inst.WS, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	c, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "ok"})
	if err != nil {
		t.Fatalf("valid hello after refusals: %v", err)
	}
	c.Close()

	// Rejections are counted by reason.
	resp, err = http.Get(inst.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `broker_connections_rejected_total{reason="bad_signature"} 1`) {
		t.Fatal("bad_signature rejection not counted")
	}
}

// The per-mesh cap holds under concurrent hellos on several instances: exactly the cap
// succeed, the rest are refused with capacity.
func TestCapacityUnderConcurrentHellos(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	names := []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11"}
	ids := brokertest.Mesh(t, db.New(d.Pool), names...)
	env := map[string]string{"DATABASE_URL": d.URL, "MAX_CONNECTIONS_PER_MESH": "5"}
	urls := []string{brokertest.Start(t, env).WS, brokertest.Start(t, env).WS}
	ctx := within(t, 20*time.Second)
	type res struct {
		c   *client.Client
		err error
	}
	out := make(chan res, len(names))
	for i, n := range names {
		go func() {
			c, err := client.Dial(ctx, urls[i%2], ids[n], client.Options{SessionID: n})
			out <- res{c, err}
		}()
	}
	ok, refused := 0, 0
	for range names {
		r := <-out
		if r.err == nil {
			ok++
			defer r.c.Close()
			continue
		}
		if rerr, isRef := r.err.(*client.RefusedError); isRef && rerr.Code == "capacity" {
			refused++
			continue
		}
		t.Fatalf("unexpected dial error: %v", r.err)
	}
	if ok != 5 || refused != len(names)-5 {
		t.Fatalf("cap 5 with %d concurrent hellos: %d connected, %d refused", len(names), ok, refused)
	}
}

// Draining an instance hands its peers over: their sockets close with 1001, their presences
// keep the grace window, and reconnecting to another instance is silent and keeps the
// presence (PROTOCOL.md §8). The takeover is audited as session_replaced.
func TestDrainHandsPresencesOver(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "DRAIN_TIMEOUT": "5s"})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	alice, err := client.Dial(ctx, i2.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	_, sess := client.NewKey()
	bob, err := client.Dial(ctx, i1.WS, ids["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := alice.Next(ctx, "push"); err != nil || p.Str("event") != "peer_joined" {
		t.Fatalf("bob's join: %v %v", p, err)
	}
	if err := i1.Stop(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	select {
	case <-bob.Done():
	case <-ctx.Done():
		t.Fatal("socket not closed by the drain")
	}
	if err := bob.Err(); err == nil || !strings.Contains(err.Error(), "StatusGoingAway") || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("drain closed bob with %v, want 1001 going away", err)
	}
	// A DM while bob is between instances waits for him.
	ack, err := alice.Send(ctx, client.Message{Target: bob.SessionPub, Priority: "now", Nonce: "n", Ciphertext: "d2FpdA=="})
	if err != nil || ack["queued"] != true {
		t.Fatalf("send during handover: %v %v", ack, err)
	}
	back, err := client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Ack.Str("presenceId") != bob.Ack.Str("presenceId") {
		t.Fatal("reconnect after drain created a new presence")
	}
	if p, err := back.NextMessage(ctx); err != nil || p.Str("messageId") != ack.Str("messageId") {
		t.Fatalf("message sent during the handover: %v %v", p, err)
	}
	quiet, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if p, err := alice.Next(quiet, "push"); err == nil {
		t.Fatalf("handover announced %v", p)
	}
	// audit_verify chains pending events first: the takeover is in the chain.
	if err := alice.Write(ctx, map[string]any{"type": "audit_query", "eventType": "session_replaced"}); err != nil {
		t.Fatal(err)
	}
	res, err := alice.Next(ctx, "audit_result")
	if err != nil || res["total"] != float64(1) {
		t.Fatalf("session_replaced audit: %v %v", res, err)
	}
	if err := alice.Write(ctx, map[string]any{"type": "audit_verify"}); err != nil {
		t.Fatal(err)
	}
	if v, err := alice.Next(ctx, "audit_verify_result"); err != nil || v["valid"] != true {
		t.Fatalf("audit_verify: %v %v", v, err)
	}
}

// A full mesh still takes back a session that dropped and reconnects inside its grace window:
// the reconnect takes its own presence over and does not count twice.
func TestReconnectIntoAFullMesh(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob", "carol")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "MAX_CONNECTIONS_PER_MESH": "2"})
	ctx := within(t, 20*time.Second)
	alice, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	_, sess := client.NewKey()
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(ctx, inst.WS, ids["carol"], client.Options{SessionID: "c"}); err == nil {
		t.Fatal("a third presence was admitted into a mesh capped at 2")
	}
	_ = bob.Drop()
	back, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatalf("reconnect into the full mesh refused: %v", err)
	}
	back.Close()
}

// Revoking a member closes its open sockets on every instance (1008 unauthorized), ends
// their presences at once (peer_left, not after the grace window) — and the presence of a
// session that had dropped and sits in its grace window, within a grace scan — and refuses
// its next hello; broadcasts no longer reach it.
func TestRevokeClosesTheMembersOpenSockets(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ids := brokertest.Mesh(t, q, "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "PRESENCE_GRACE_SECONDS": "600"})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "PRESENCE_GRACE_SECONDS": "600"})
	ctx := within(t, 30*time.Second)
	alice, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	var bobs []*client.Client
	for i, url := range []string{i1.WS, i2.WS} {
		b, err := client.Dial(ctx, url, ids["bob"], client.Options{SessionID: fmt.Sprintf("b%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		bobs = append(bobs, b)
	}
	dropped, err := client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionID: "b-dropped"})
	if err != nil {
		t.Fatal(err)
	}
	for joined := 0; joined < 3; {
		p, err := alice.Next(ctx, "push")
		if err != nil {
			t.Fatalf("waiting for bob's peer_joined: %v", err)
		}
		if p.Str("event") == "peer_joined" {
			joined++
		}
	}
	_ = dropped.Drop() // into its 10-minute grace window
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM presences WHERE member_id = $1 AND disconnected_at IS NOT NULL AND ended_at IS NULL",
			ids["bob"].MemberID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dropped session never entered its grace window")
		}
	}

	if _, err := admin.RevokeMember(ctx, d.Pool, ids["bob"].MeshID, ids["bob"].MemberID, ""); err != nil {
		t.Fatal(err)
	}
	for i, b := range bobs {
		select {
		case <-b.Done():
		case <-ctx.Done():
			t.Fatalf("bob's socket on instance %d still open after the revocation", i+1)
		}
		if err := b.Err(); websocket.CloseStatus(err) != 4002 || !strings.Contains(err.Error(), `"revoked"`) {
			t.Fatalf("bob's socket on instance %d closed with %v, want 4002 revoked", i+1, err)
		}
	}
	// All three presences end now (the grace window is 10 minutes): three peer_left.
	for left := 0; left < 3; {
		p, err := alice.Next(ctx, "push")
		if err != nil {
			t.Fatalf("waiting for bob's peer_left (%d of 3 seen): %v", left, err)
		}
		if p.Str("event") == "peer_left" {
			left++
		}
	}
	var live, revoked int
	if err := d.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE ended_at IS NULL), count(*) FILTER (WHERE end_reason = 'revoked')
		FROM presences WHERE member_id = $1`, ids["bob"].MemberID).Scan(&live, &revoked); err != nil || live != 0 || revoked != 3 {
		t.Fatalf("bob's presences: %d live, %d ended as revoked, %v; want 0 and 3", live, revoked, err)
	}
	_, err = client.Dial(ctx, i2.WS, ids["bob"], client.Options{SessionID: "b-again"})
	if rerr, ok := err.(*client.RefusedError); !ok || rerr.Code != "unauthorized" {
		t.Fatalf("hello after the revocation: %v, want refused with unauthorized", err)
	}
}
