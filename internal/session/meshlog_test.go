package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Broadcast and group messages are entries of the mesh log, read by each presence after its
// cursor (migration 14): these tests cover what the cursor promises.

// A client_ack client that acknowledged one broadcast and not the next gets the unacknowledged
// one again after it reconnects, and not the acknowledged one.
func TestBroadcastClientAckRedeliversUnacknowledged(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	opts := client.Options{SessionID: "bob-1", Capabilities: []string{"client_ack"}}
	alice := dial(ctx, t, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	bob := dial(ctx, t, inst.WS, ids["bob"], opts)
	ack1, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "b25l"})
	ack2, _ := alice.Send(ctx, client.Message{Target: "@all", Priority: "now", Nonce: "n", Ciphertext: "dHdv"})
	for _, want := range []string{ack1.Str("messageId"), ack2.Str("messageId")} {
		if p, err := bob.NextMessage(ctx); err != nil || p.Str("messageId") != want {
			t.Fatalf("push %v %v; want %s", p, err, want)
		}
	}
	if err := bob.Write(ctx, map[string]any{"type": "client_ack", "messageId": ack1.Str("messageId")}); err != nil {
		t.Fatal(err)
	}
	presence := bob.Ack.Str("presenceId")
	waitFor(t, ctx, "bob's cursor stored past the acknowledged broadcast", func() bool {
		return logCursor(t, d, presence) == 1
	})
	_ = bob.Drop()
	waitDisconnected(t, ctx, d, presence)

	again := dial(ctx, t, inst.WS, ids["bob"], opts)
	p, err := again.NextMessage(ctx)
	if err != nil || p.Str("messageId") != ack2.Str("messageId") {
		t.Fatalf("redelivery: %v %v (want %s)", p, err, ack2.Str("messageId"))
	}
	quiet, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if p, err := again.NextMessage(quiet); err == nil {
		t.Fatalf("acknowledged broadcast delivered again: %v", p)
	}
	if err := again.Write(ctx, map[string]any{"type": "client_ack", "messageIds": []string{ack2.Str("messageId")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "bob's cursor stored past both", func() bool { return logCursor(t, d, presence) == 2 })
}

// A presence in its grace window longer than QUEUE_TTL loses the broadcasts the purge took
// while it was away: on reconnect it is told (messages_missed) instead of skipping them
// silently, and reads on from there — what was sent after the purge, then new entries.
func TestPurgedLogWhileInGraceSaysMessagesMissed(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ids := brokertest.Mesh(t, q, "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	alice := dial(ctx, t, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	bobOpts := client.Options{SessionID: "bob-1"}
	bob := dial(ctx, t, inst.WS, ids["bob"], bobOpts)
	first, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "MQ=="})
	if p, err := bob.NextMessage(ctx); err != nil || p.Str("messageId") != first.Str("messageId") {
		t.Fatalf("first broadcast: %v %v", p, err)
	}
	presence := bob.Ack.Str("presenceId")
	waitFor(t, ctx, "bob's cursor stored", func() bool { return logCursor(t, d, presence) == 1 })
	_ = bob.Drop()
	waitDisconnected(t, ctx, d, presence)

	for _, c := range []string{"Mg==", "Mw=="} {
		if ack, err := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: c}); err != nil || ack["queued"] != true {
			t.Fatalf("broadcast while bob is away: %v %v", ack, err)
		}
	}
	// Their TTL runs out; the purge takes them once the audit chain has their events.
	if _, err := d.Pool.Exec(ctx, "UPDATE messages SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the purge to delete the broadcasts", func() bool {
		if _, err := audit.ChainPending(ctx, d.Pool, ids["alice"].MeshID); err != nil {
			t.Fatal(err)
		}
		if _, err := q.PurgeExpiredMessages(ctx); err != nil {
			t.Fatal(err)
		}
		var purged int64
		_ = d.Pool.QueryRow(ctx, "SELECT purged_through FROM mesh_logs WHERE mesh_id = $1", ids["alice"].MeshID).Scan(&purged)
		return purged == 3
	})
	after, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "NA=="})

	back := dial(ctx, t, inst.WS, ids["bob"], bobOpts)
	if back.Ack.Str("presenceId") != presence {
		t.Fatalf("reconnect got presence %s, want %s (inside the grace window)", back.Ack.Str("presenceId"), presence)
	}
	missed, got := 0, []string{}
	for len(got) < 1 {
		p, err := back.Next(ctx, "push")
		if err != nil {
			t.Fatalf("after reconnect: %v (missed %d, got %v)", err, missed, got)
		}
		if p.Str("event") == "messages_missed" {
			missed++
			continue
		}
		if p.Str("subtype") != "system" {
			got = append(got, p.Str("messageId"))
		}
	}
	if missed != 1 || got[0] != after.Str("messageId") {
		t.Fatalf("after reconnect: %d messages_missed, messages %v; want 1 and %s", missed, got, after.Str("messageId"))
	}
	waitFor(t, ctx, "bob's cursor stored past the loss", func() bool { return logCursor(t, d, presence) == 4 })
	// Reading on: the next broadcast comes, and the loss is not reported twice.
	next, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "NQ=="})
	for {
		p, err := back.Next(ctx, "push")
		if err != nil {
			t.Fatal(err)
		}
		if p.Str("event") == "messages_missed" {
			t.Fatalf("the loss reported again: %v", p)
		}
		if p.Str("messageId") == next.Str("messageId") {
			break
		}
	}
	if v := counterValue(t, metricsText(t, inst.HTTP), "broker_log_cursors_missed_total"); v != 1 {
		t.Fatalf("broker_log_cursors_missed_total = %v, want 1", v)
	}
}

// A cursor that counts in another epoch of the log (the log was recreated: a rollback and
// reapply of migration 14, a restore) is detected, not read against positions that mean
// something else: the presence is told, and reads from the head on.
func TestCursorFromAnotherLogEpochIsReset(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	alice := dial(ctx, t, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	bobOpts := client.Options{SessionID: "bob-1"}
	bob := dial(ctx, t, inst.WS, ids["bob"], bobOpts)
	old, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "MQ=="})
	if p, err := bob.NextMessage(ctx); err != nil || p.Str("messageId") != old.Str("messageId") {
		t.Fatalf("first broadcast: %v %v", p, err)
	}
	presence := bob.Ack.Str("presenceId")
	_ = bob.Drop()
	waitDisconnected(t, ctx, d, presence)
	// The cursor is far ahead, in an epoch the log does not have: read naively, it would
	// skip every entry up to 1000.
	if _, err := d.Pool.Exec(ctx, "UPDATE presences SET log_epoch = 'gone', log_acked = 1000 WHERE id = $1", presence); err != nil {
		t.Fatal(err)
	}
	back := dial(ctx, t, inst.WS, ids["bob"], bobOpts)
	if p, err := back.Next(ctx, "push"); err != nil || p.Str("event") != "messages_missed" {
		t.Fatalf("after reconnect: %v %v; want messages_missed", p, err)
	}
	next, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "Mg=="})
	if p, err := back.NextMessage(ctx); err != nil || p.Str("messageId") != next.Str("messageId") {
		t.Fatalf("broadcast after the reset: %v %v; want %s", p, err, next.Str("messageId"))
	}
	waitFor(t, ctx, "the cursor stored in the log's epoch", func() bool {
		var epoch string
		_ = d.Pool.QueryRow(ctx, "SELECT p.log_epoch FROM presences p JOIN mesh_logs l ON l.epoch = p.log_epoch WHERE p.id = $1", presence).Scan(&epoch)
		return epoch != "" && logCursor(t, d, presence) == 2
	})
}

// Broadcasts are never held by priority gating (PROTOCOL.md: gating is for direct
// messages): a `next` broadcast reaches a working recipient at once, and message_status
// reports each recipient in scope, delivered once its cursor passed the entry; a group
// message's status lists only the group.
func TestBroadcastToWorkingPeerAndItsStatus(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob", "carol")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 20*time.Second)
	alice := dial(ctx, t, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b", Groups: []map[string]string{{"name": "ops/db"}}})
	carol := dial(ctx, t, inst.WS, ids["carol"], client.Options{SessionID: "c"})
	if err := bob.Write(ctx, map[string]any{"type": "set_status", "status": "working"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	bc, _ := alice.Send(ctx, client.Message{Target: "*", Priority: "next", Nonce: "n", Ciphertext: "YmM="})
	grp, _ := alice.Send(ctx, client.Message{Target: "@ops", Priority: "low", Nonce: "n", Ciphertext: "Z3A="})
	for _, want := range []string{bc.Str("messageId"), grp.Str("messageId")} {
		quick, cancel := context.WithTimeout(ctx, 3*time.Second)
		p, err := bob.NextMessage(quick)
		cancel()
		if err != nil || p.Str("messageId") != want {
			t.Fatalf("working bob: %v %v; want %s pushed at once", p, err, want)
		}
	}
	if p, err := carol.NextMessage(ctx); err != nil || p.Str("messageId") != bc.Str("messageId") {
		t.Fatalf("carol: %v %v", p, err)
	}
	status := func(id string) client.Frame {
		if err := alice.Write(ctx, map[string]any{"type": "message_status", "messageId": id}); err != nil {
			t.Fatal(err)
		}
		f, err := alice.Next(ctx, "message_status_result")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	waitFor(t, ctx, "the broadcast delivered to bob and carol", func() bool {
		f := status(bc.Str("messageId"))
		recips, _ := f["recipients"].([]any)
		return f["delivered"] == true && len(recips) == 2 && f["deliveredAt"] != nil
	})
	waitFor(t, ctx, "the group message delivered to bob alone", func() bool {
		f := status(grp.Str("messageId"))
		recips, _ := f["recipients"].([]any)
		if len(recips) != 1 {
			return false
		}
		r, _ := recips[0].(map[string]any)
		return f["delivered"] == true && r["status"] == "delivered" && r["name"] == "bob"
	})
}

// waitDisconnected waits until the broker noticed a dropped socket (the presence is in its
// grace window): until then the old socket still reads the log, and a test's next step could
// race it.
func waitDisconnected(t *testing.T, ctx context.Context, d *testdb.DB, presenceID string) {
	t.Helper()
	waitFor(t, ctx, "the dropped socket noticed", func() bool {
		var gone bool
		_ = d.Pool.QueryRow(ctx, "SELECT disconnected_at IS NOT NULL FROM presences WHERE id = $1", presenceID).Scan(&gone)
		return gone
	})
}

// logCursor is a presence's stored log cursor.
func logCursor(t *testing.T, d *testdb.DB, presenceID string) int64 {
	t.Helper()
	var n int64
	if err := d.Pool.QueryRow(context.Background(), "SELECT log_acked FROM presences WHERE id = $1", presenceID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A client_ack client acknowledging every push on its own is not throttled by the control
// budget (20 frames a second): its acks are paid for by the pushes it received, so none is
// refused and nothing comes again. Acks beyond what was pushed still draw on the budget.
func TestAcksOfManyPushesAreNotRateLimited(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "SEND_RATE_LIMIT_PER_MIN": "0"})
	ctx := within(t, 30*time.Second)
	alice := dial(ctx, t, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	bob := dial(ctx, t, inst.WS, ids["bob"], client.Options{SessionID: "b", Capabilities: []string{"client_ack"}})
	const n = 150
	for i := range n {
		if ack, err := alice.Send(ctx, client.Message{Target: "*", Priority: "now", Nonce: "n", Ciphertext: "eA==", ClientMessageID: itoa(i)}); err != nil || ack["queued"] != true {
			t.Fatalf("send %d: %v %v", i, ack, err)
		}
	}
	for range n {
		p, err := bob.NextMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.Write(ctx, map[string]any{"type": "client_ack", "messageId": p.Str("messageId")}); err != nil {
			t.Fatal(err)
		}
	}
	presence := bob.Ack.Str("presenceId")
	waitFor(t, ctx, "bob's cursor stored past every broadcast", func() bool { return logCursor(t, d, presence) == n })
	quiet, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if f, err := bob.Next(quiet, "error"); err == nil {
		t.Fatalf("an ack was refused: %v", f)
	}
	// With the credit spent, acks of nothing are budgeted again: a flood is cut off.
	for i := range 200 {
		_ = bob.Write(ctx, map[string]any{"type": "client_ack", "messageId": "bogus-" + itoa(i)})
	}
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	if f, err := bob.Next(rctx, "error"); err != nil || f.Str("code") != "rate_limit" {
		t.Fatalf("200 acks of nothing: %v %v; want rate_limit", f, err)
	}
}
