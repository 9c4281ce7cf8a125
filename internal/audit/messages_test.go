package audit

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// storeOne stores one message the way the Router does (StoreBatch, audited), through q.
func storeOne(t *testing.T, ctx context.Context, q *db.Queries, meshID, id, target string, expires time.Time) {
	t.Helper()
	_, err := q.StoreBatch(ctx, db.StoreBatchParams{
		Ids: []string{id}, MeshIds: []string{meshID}, SenderMemberIds: []string{"mem-" + meshID},
		SenderPresenceIds: []string{"p"}, SenderSessionPubkeys: []string{""}, SenderMemberPubkeys: []string{"aa"},
		SenderNames: []string{"alice"}, TargetSpecs: []string{target}, TargetKinds: []string{"broadcast"},
		Priorities: []string{"now"}, Nonces: []string{"n"}, Ciphertexts: []string{"c"}, ClientMessageIds: []string{""},
		ExpiresAts: []time.Time{expires}, Audited: true,
		DMessageIds: []string{}, DMeshIds: []string{}, DMemberIds: []string{}, DPresenceIds: []string{},
		DPriorities: []string{}, DExpiresAts: []time.Time{},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mkMeshWithMember(t *testing.T, d *testdb.DB, meshID string) {
	t.Helper()
	mkMesh(t, d, meshID)
	if _, err := d.Pool.Exec(context.Background(), "INSERT INTO members (id, mesh_id, peer_pubkey, display_name) VALUES ($1, $2, 'aa', 'alice')",
		"mem-"+meshID, meshID); err != nil {
		t.Fatal(err)
	}
}

// chainedTargets chains meshID (rounds until want events are in, or 10 s: a message waits
// for every older transaction on the cluster, and parallel tests run some) and returns the
// targetSpecs of its message_sent events in chain order.
func chainedTargets(t *testing.T, ctx context.Context, d *testdb.DB, meshID string, want int) []string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := ChainPending(ctx, d.Pool, meshID); err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		rows, err := d.Pool.Query(ctx, "SELECT payload->>'targetSpec' FROM audit_log WHERE mesh_id = $1 AND event_type = 'message_sent' ORDER BY id", meshID)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			got = append(got, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
	}
}

// chainedRows chains meshID (rounds until want events are in, or 10 s, as chainedTargets) and
// returns its whole chain.
func chainedRows(t *testing.T, ctx context.Context, d *testdb.DB, meshID string, want int) []db.AuditChainRow {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := ChainPending(ctx, d.Pool, meshID); err != nil {
			t.Fatal(err)
		}
		rows, err := db.New(d.Pool).AuditChain(ctx, meshID)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) >= want || time.Now().After(deadline) {
			return rows
		}
	}
}

// A message stored by a transaction that commits after a later one's is still chained, once:
// the chainer does not move its cursor past a transaction that is still running. (Chaining in
// commit order of what is visible would append the later message, move the cursor past the
// earlier one's position, and lose it when it commits.)
func TestMessageStoredByASlowTransactionIsChained(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	mkMeshWithMember(t, d, "mS")
	expires := time.Now().Add(time.Hour)

	slow, err := d.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	// The slow transaction's message has the older transaction id but the larger message id:
	// the chain follows transactions, not ids.
	storeOne(t, ctx, db.New(slow), "mS", "zzzzzzzzslow", "@first", expires) // not committed yet
	storeOne(t, ctx, db.New(d.Pool), "mS", "00000000fast", "@second", expires)

	if _, err := ChainPending(ctx, d.Pool, "mS"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE mesh_id = 'mS'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d events chained while an older transaction that stored a message is running (%v); want 0", n, err)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := chainedTargets(t, ctx, d, "mS", 2)
	if len(got) != 2 || got[0] != "@first" || got[1] != "@second" {
		t.Fatalf("message_sent events in the chain: %v, want [@first @second] (storing transaction order)", got)
	}
	// Nothing is chained twice.
	if _, err := ChainPending(ctx, d.Pool, "mS"); err != nil {
		t.Fatal(err)
	}
	v, err := VerifyMesh(ctx, db.New(d.Pool), "mS")
	if err != nil || !v.Valid || v.Entries != 2 {
		t.Fatalf("chain: %+v %v; want 2 valid entries", v, err)
	}
}

// A message's event carries what the original's did: the sender as actor (id and display
// name), payload {targetSpec, priority}, the message's own time. Pending events (hellos,
// closes) and message events of one mesh are chained in the order of the transactions that
// wrote them — causal order — whatever times their writers gave them.
func TestMessageSentEventFromTheMessageRow(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	q := db.New(d.Pool)
	mkMeshWithMember(t, d, "mE")
	// Times that disagree with the order of writing: ordering by time would put peer_left
	// first and peer_joined last.
	if err := Enqueue(ctx, q, []Event{{MeshID: "mE", Type: "peer_joined", ActorID: "mem-mE", ActorName: "alice"}}, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	storeOne(t, ctx, q, "mE", "00000000m1", "<all & *>", time.Now().Add(time.Hour))
	if err := Enqueue(ctx, q, []Event{{MeshID: "mE", Type: "peer_left", ActorID: "mem-mE", ActorName: "alice"}}, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	rows := chainedRows(t, ctx, d, "mE", 3)
	if len(rows) != 3 || rows[0].EventType != "peer_joined" || rows[1].EventType != "message_sent" || rows[2].EventType != "peer_left" {
		var got []string
		for _, r := range rows {
			got = append(got, r.EventType)
		}
		t.Fatalf("chain: %v; want [peer_joined message_sent peer_left] (the order they were written)", got)
	}
	var created time.Time
	if err := d.Pool.QueryRow(ctx, "SELECT created_at FROM messages WHERE id = '00000000m1'").Scan(&created); err != nil {
		t.Fatal(err)
	}
	m := rows[1]
	canon, err := CanonicalJSON(m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if m.ActorMemberID == nil || *m.ActorMemberID != "mem-mE" || canon != `{"priority":"now","targetSpec":"<all & *>"}` ||
		!m.CreatedAt.Equal(TruncateToMillis(created)) {
		t.Fatalf("message_sent row: actor %v, payload %s, created %s (message %s)", m.ActorMemberID, canon, m.CreatedAt, created)
	}
	var name string
	if err := d.Pool.QueryRow(ctx, "SELECT actor_display_name FROM audit_log WHERE mesh_id = 'mE' AND event_type = 'message_sent'").Scan(&name); err != nil || name != "alice" {
		t.Fatalf("actor_display_name %q, %v; want alice", name, err)
	}
	if v, err := VerifyMesh(ctx, q, "mE"); err != nil || !v.Valid {
		t.Fatalf("chain: %+v %v", v, err)
	}
}

// The purge never deletes an expired message whose event is not chained yet; once it is
// chained, the message goes.
func TestPurgeKeepsMessagesUntilTheirEventIsChained(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	q := db.New(d.Pool)
	mkMeshWithMember(t, d, "mP")
	storeOne(t, ctx, q, "mP", "00000000old", "*", time.Now().Add(-time.Minute)) // already expired
	if _, err := q.PurgeExpiredMessages(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM messages WHERE mesh_id = 'mP'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("messages after purging before the chainer ran: %d, %v; want 1 (kept for its audit event)", n, err)
	}
	if got := chainedTargets(t, ctx, d, "mP", 1); len(got) != 1 {
		t.Fatalf("message_sent events: %v", got)
	}
	if _, err := q.PurgeExpiredMessages(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM messages WHERE mesh_id = 'mP'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("messages after purging a chained one: %d, %v; want 0", n, err)
	}
}

// Messages stored for a mesh nobody noted (stored by another instance, whose chainer is gone)
// are chained by the sweep; a mesh whose messages are all chained is not swept again.
func TestChainerSweepFindsUnchainedMessages(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := db.New(d.Pool)
	mkMeshWithMember(t, d, "mDone")
	mkMeshWithMember(t, d, "mLeft")
	storeOne(t, ctx, q, "mDone", "00000000a", "*", time.Now().Add(time.Hour))
	if got := chainedTargets(t, ctx, d, "mDone", 1); len(got) != 1 {
		t.Fatalf("mDone: %v", got)
	}
	storeOne(t, ctx, q, "mLeft", "00000000b", "*", time.Now().Add(time.Hour))
	// Until older transactions on the cluster end, the sweep may not see it yet.
	var meshes []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if meshes, err = q.MeshesWithUnchainedMessages(ctx); err != nil {
			t.Fatal(err)
		}
		if len(meshes) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(meshes) != 1 || meshes[0] != "mLeft" {
		t.Fatalf("meshes with unchained messages: %v, want [mLeft]", meshes)
	}
	c := NewChainer(d.Pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go c.Run(ctx, 20*time.Millisecond, 100*time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE mesh_id = 'mLeft'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sweep did not chain mLeft's message (%d events)", n)
		}
	}
	if meshes, err := q.MeshesWithUnchainedMessages(ctx); err != nil || len(meshes) != 0 {
		t.Fatalf("after the sweep: %v %v, want none", meshes, err)
	}
}

// When one source fills its batch, the other does not get ahead of what the full one left
// for the next round: three pending events and then a message, read two at a time, are
// chained in the order they were written. (Not parallel: it shrinks the package's batch.)
func TestBatchLimitKeepsTransactionOrder(t *testing.T) {
	defer func(n int) { chainBatch = n }(chainBatch)
	chainBatch = 2
	d := testdb.New(t)
	ctx := context.Background()
	q := db.New(d.Pool)
	mkMeshWithMember(t, d, "mB")
	for i := range 3 {
		if err := Enqueue(ctx, q, []Event{{MeshID: "mB", Type: "peer_joined", ActorID: "mem-mB", Payload: map[string]any{"i": i}}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	storeOne(t, ctx, q, "mB", "00000000m", "*", time.Now().Add(time.Hour))
	rows := chainedRows(t, ctx, d, "mB", 4)
	var got []string
	for _, r := range rows {
		got = append(got, r.EventType)
	}
	if len(got) != 4 || got[3] != "message_sent" {
		t.Fatalf("chain: %v; want three peer_joined, then message_sent", got)
	}
	if v, err := VerifyMesh(ctx, q, "mB"); err != nil || !v.Valid || v.Entries != 4 {
		t.Fatalf("chain: %+v %v", v, err)
	}
}

// audit_query and audit_verify see every event written before they were asked: ChainCaughtUp
// waits for an older transaction that holds the event back, instead of reading a chain
// without it.
func TestChainCaughtUpWaitsForOlderTransactions(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	q := db.New(d.Pool)
	mkMesh(t, d, "mW")
	older, err := d.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	if _, err := older.Exec(ctx, "INSERT INTO meshes (id, name, slug) VALUES ('mW2', 'mW2', 'mW2')"); err != nil { // takes a transaction id
		_ = older.Rollback(ctx)
		t.Fatal(err)
	}
	if err := Enqueue(ctx, q, []Event{{MeshID: "mW", Type: "peer_joined", ActorID: "x"}}, time.Now()); err != nil {
		_ = older.Rollback(ctx)
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		committed <- older.Commit(ctx)
	}()
	caughtUp := ChainCaughtUp(ctx, d.Pool, "mW", 10*time.Second)
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if caughtUp != nil {
		t.Fatal(caughtUp)
	}
	var n int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE mesh_id = 'mW'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("events chained when ChainCaughtUp returned: %d, %v; want the one written before the call", n, err)
	}
}
