package delivery_test

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func presence(t *testing.T, d *testdb.DB, id, memberID, status string) {
	t.Helper()
	if _, err := d.Pool.Exec(context.Background(), `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, status)
		SELECT $1, mesh_id, id, $1, 's', 1, '/', $3 FROM members WHERE id = $2`, id, memberID, status); err != nil {
		t.Fatal(err)
	}
}

func claimFor(presence, member string, lim int32) db.ClaimDeliveriesParams {
	return db.ClaimDeliveriesParams{PresenceIds: []string{presence}, MemberIds: []string{member}, Epochs: []int64{1}, Lim: lim, LeaseSeconds: 30}
}

func sender(ids map[string]string, meshID, memberID, pubkey string) delivery.Sender {
	return delivery.Sender{MeshID: meshID, MemberID: memberID, MemberPubkey: pubkey, PresenceID: "sender"}
}

// Concurrent claims for one recipient get disjoint sets whose union is everything (the
// reference's dup-delivery cases), in FIFO order within each claim.
func TestConcurrentClaimsPartition(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	ids := brokertest.Mesh(t, q, "alice", "bob")
	a, b := ids["alice"], ids["bob"]
	presence(t, d, "bob-p", b.MemberID, "idle")
	r := delivery.NewRouter(d.Pool, time.Hour)
	const n = 20
	var order []string
	for range n {
		out, err := r.Send(ctx, sender(nil, a.MeshID, a.MemberID, a.Pubkey), delivery.Request{TargetSpec: b.Pubkey, Priority: "now", Nonce: "n", Ciphertext: "c"})
		if err != nil || !out.Queued {
			t.Fatalf("send: %+v %v", out, err)
		}
		order = append(order, out.MessageID)
	}
	const claimers = 6
	results := make([][]string, claimers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rows, err := q.ClaimDeliveries(ctx, claimFor("bob-p", b.MemberID, 7))
			if err != nil {
				t.Error(err)
				return
			}
			for _, row := range rows {
				results[i] = append(results[i], row.MessageID)
			}
		}()
	}
	close(start)
	wg.Wait()
	seen := map[string]int{}
	for _, res := range results {
		for _, id := range res {
			seen[id]++
		}
	}
	// 6 claims of up to 7 rows over 20 rows: every row claimed exactly once.
	if len(seen) != n {
		t.Fatalf("claimed %d distinct rows of %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("row %s claimed %d times", id, c)
		}
	}
	// A leased row is not claimable again until its lease expires.
	again, _ := q.ClaimDeliveries(ctx, claimFor("bob-p", b.MemberID, 100))
	if len(again) != 0 {
		t.Fatalf("leased rows claimed again: %d", len(again))
	}
	if _, err := d.Pool.Exec(ctx, "UPDATE deliveries SET lease_expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	again, _ = q.ClaimDeliveries(ctx, claimFor("bob-p", b.MemberID, 100))
	if len(again) != n {
		t.Fatalf("after lease expiry: %d rows", len(again))
	}
	slices.SortFunc(again, func(x, y db.ClaimDeliveriesRow) int { return cmp.Compare(x.DeliveryID, y.DeliveryID) })
	for i, row := range again {
		if row.MessageID != order[i] {
			t.Fatalf("claim order: position %d has %s, want %s (FIFO)", i, row.MessageID, order[i])
		}
	}
}

// Priority gating: a working recipient gets only now; held rows come once it is idle.
func TestClaimGatesOnStatus(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	ids := brokertest.Mesh(t, q, "alice", "bob")
	a, b := ids["alice"], ids["bob"]
	presence(t, d, "bob-p", b.MemberID, "working")
	r := delivery.NewRouter(d.Pool, time.Hour)
	for _, p := range []string{"next", "now", "low"} {
		if out, err := r.Send(ctx, sender(nil, a.MeshID, a.MemberID, a.Pubkey), delivery.Request{TargetSpec: b.Pubkey, Priority: p, Nonce: "n", Ciphertext: p}); err != nil || !out.Queued {
			t.Fatal(out, err)
		}
	}
	rows, _ := q.ClaimDeliveries(ctx, claimFor("bob-p", b.MemberID, 10))
	if len(rows) != 1 || rows[0].Priority != "now" {
		t.Fatalf("working recipient claimed %d rows", len(rows))
	}
	if _, err := d.Pool.Exec(ctx, "UPDATE presences SET status = 'dnd' WHERE id = 'bob-p'"); err != nil {
		t.Fatal(err)
	}
	if rows, _ := q.ClaimDeliveries(ctx, claimFor("bob-p", b.MemberID, 10)); len(rows) != 0 {
		t.Fatalf("dnd recipient claimed held rows")
	}
	if _, err := d.Pool.Exec(ctx, "UPDATE presences SET status = 'idle' WHERE id = 'bob-p'"); err != nil {
		t.Fatal(err)
	}
	if rows, _ := q.ClaimDeliveries(ctx, claimFor("bob-p", b.MemberID, 10)); len(rows) != 2 {
		t.Fatalf("idle recipient claimed %d held rows, want 2", len(rows))
	}
}

// Routing: unknown keys and other meshes' keys are refused up front, never queued to nobody;
// a member's key in another mesh is not a recipient here.
func TestRoutingAndMeshIsolation(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	x := brokertest.Mesh(t, q, "alice", "bob")
	y := brokertest.Mesh(t, q, "carol")
	a := x["alice"]
	r := delivery.NewRouter(d.Pool, time.Hour)
	s := sender(nil, a.MeshID, a.MemberID, a.Pubkey)
	for _, target := range []string{y["carol"].Pubkey, "zzzz", "0000000000000000000000000000000000000000000000000000000000000000", "#channel"} {
		out, err := r.Send(ctx, s, delivery.Request{TargetSpec: target, Priority: "now", Nonce: "n", Ciphertext: "c"})
		if err != nil || out.Queued || out.Reason != "no_recipient" || out.Error != delivery.ErrTextNoRecipient {
			t.Errorf("target %q: %+v %v", target, out, err)
		}
	}
	var stored int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("refused sends stored %d messages (%v)", stored, err)
	}
	// Grants: bob blocks alice's dm.
	if _, err := d.Pool.Exec(ctx, `UPDATE members SET peer_grants = jsonb_build_object($1::text, '[]'::jsonb) WHERE id = $2`, a.Pubkey, x["bob"].MemberID); err != nil {
		t.Fatal(err)
	}
	drops := 0
	r.OnGrantDrop = func(string) { drops++ }
	out, err := r.Send(ctx, s, delivery.Request{TargetSpec: x["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "c"})
	if err != nil || out.Queued || out.Error != delivery.ErrTextGrantDM || drops != 1 {
		t.Fatalf("grant block: %+v %v drops=%d", out, err, drops)
	}
	// Idempotency: the same clientMessageId is stored once.
	out1, _ := r.Send(ctx, s, delivery.Request{TargetSpec: "*", Priority: "now", Nonce: "n", Ciphertext: "c", ClientMessageID: "retry-1"})
	out2, _ := r.Send(ctx, s, delivery.Request{TargetSpec: "*", Priority: "now", Nonce: "n", Ciphertext: "c", ClientMessageID: "retry-1"})
	if !out1.Queued || out2.MessageID != out1.MessageID || !out2.Duplicate {
		t.Fatalf("idempotent retry: %+v %+v", out1, out2)
	}
}

// A copy stored for a presence that ended meanwhile is rerouted by the periodic job: a
// direct copy to its member, a multicast copy dropped.
func TestRerouteEndedPresenceDeliveries(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	ids := brokertest.Mesh(t, q, "alice", "bob")
	a, b := ids["alice"], ids["bob"]
	if _, err := d.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, session_pubkey, pid, cwd)
		VALUES ('bob-p', $1, $2, 'k', 's', $3, 1, '/')`, b.MeshID, b.MemberID, "ab"+b.Pubkey[2:]); err != nil {
		t.Fatal(err)
	}
	r := delivery.NewRouter(d.Pool, time.Hour)
	s := sender(nil, a.MeshID, a.MemberID, a.Pubkey)
	dm, err := r.Send(ctx, s, delivery.Request{TargetSpec: "ab" + b.Pubkey[2:], Priority: "now", Nonce: "n", Ciphertext: "c"})
	if err != nil || !dm.Queued {
		t.Fatal(dm, err)
	}
	bc, err := r.Send(ctx, s, delivery.Request{TargetSpec: "*", Priority: "now", Nonce: "n", Ciphertext: "c"})
	if err != nil || !bc.Queued {
		t.Fatal(bc, err)
	}
	// The presence ends without the end path's reroute (as if it raced the sends).
	if _, err := d.Pool.Exec(ctx, "UPDATE presences SET ended_at = now() WHERE id = 'bob-p'"); err != nil {
		t.Fatal(err)
	}
	if n, err := q.RerouteEndedPresenceDeliveries(ctx); err != nil || n != 1 {
		t.Fatalf("rerouted %d, %v; want the direct copy", n, err)
	}
	var member, multicast int
	_ = d.Pool.QueryRow(ctx, "SELECT count(*) FROM deliveries WHERE message_id = $1 AND recipient_presence_id IS NULL AND recipient_member_id = $2", dm.MessageID, b.MemberID).Scan(&member)
	_ = d.Pool.QueryRow(ctx, "SELECT count(*) FROM deliveries WHERE message_id = $1", bc.MessageID).Scan(&multicast)
	if member != 1 || multicast != 0 {
		t.Fatalf("after reroute: direct copies for the member %d (want 1), multicast copies %d (want 0)", member, multicast)
	}
}

// A batch in which one send repeats a stored clientMessageId is stored as a whole or not at
// all: the duplicate is acked with the stored id and every other send of the batch is stored
// exactly once — even when the duplicate is a broadcast with nobody in scope, which has no
// delivery row whose foreign key could fail the statement.
func TestDuplicateInABatchStoresTheRestOnce(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	a := brokertest.Mesh(t, q, "alice")["alice"] // alone: a broadcast reaches nobody
	r := delivery.NewRouter(d.Pool, time.Hour)
	s := sender(nil, a.MeshID, a.MemberID, a.Pubkey)
	first, err := r.Send(ctx, s, delivery.Request{TargetSpec: "*", Priority: "now", Nonce: "n", Ciphertext: "c", ClientMessageID: "dup"})
	if err != nil || !first.Queued {
		t.Fatalf("first send: %+v %v", first, err)
	}
	type result struct {
		out delivery.Outcome
		err error
	}
	const others = 20
	results := make(chan result, others+1)
	cb := func(o delivery.Outcome, err error) { results <- result{o, err} }
	// Submitted back to back from one goroutine (one sender): they queue on one worker and
	// are stored as one or a few batches.
	r.SendAsync(ctx, s, delivery.Request{TargetSpec: "*", Priority: "now", Nonce: "n", Ciphertext: "c", ClientMessageID: "dup"}, cb)
	for range others {
		r.SendAsync(ctx, s, delivery.Request{TargetSpec: "*", Priority: "now", Nonce: "n", Ciphertext: "c"}, cb)
	}
	dups := 0
	for range others + 1 {
		res := <-results
		if res.err != nil || !res.out.Queued {
			t.Fatalf("send: %+v %v", res.out, res.err)
		}
		if res.out.Duplicate {
			dups++
			if res.out.MessageID != first.MessageID {
				t.Fatalf("duplicate acked with %s, stored as %s", res.out.MessageID, first.MessageID)
			}
		}
	}
	var stored, audited int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	// Each stored message is chained once. (A message waits for transactions older than its
	// own — anywhere on the cluster, here the parallel tests' — so the chainer may need a
	// few rounds.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := audit.ChainPending(ctx, d.Pool, a.MeshID); err != nil {
			t.Fatal(err)
		}
		if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE event_type = 'message_sent'").Scan(&audited); err != nil {
			t.Fatal(err)
		}
		if audited >= 1+others || time.Now().After(deadline) {
			break
		}
	}
	if dups != 1 || stored != 1+others || audited != 1+others {
		t.Fatalf("%d duplicates acked, %d messages stored, %d message_sent events; want 1, %d, %d", dups, stored, audited, 1+others, 1+others)
	}
}

// Broadcasts are entries of the mesh log in send order, one row each whoever is in scope;
// reading the log does not reach the presences of a revoked member, even one whose socket is
// still open for a moment (its instance closes it on the revoke notification).
func TestLogEntriesInOrderAndRevokedMembersReadNothing(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	ids := brokertest.Mesh(t, q, "alice", "bob", "carol")
	for _, who := range []string{"bob", "carol"} {
		if _, err := d.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd)
			VALUES ($1, $2, $3, $1, $1, 1, '/')`, who+"-p", ids[who].MeshID, ids[who].MemberID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Pool.Exec(ctx, "UPDATE members SET revoked_at = now() WHERE id = $1", ids["carol"].MemberID); err != nil {
		t.Fatal(err)
	}
	r := delivery.NewRouter(d.Pool, time.Hour)
	s := sender(nil, ids["alice"].MeshID, ids["alice"].MemberID, ids["alice"].Pubkey)
	var sent []string
	for i := range 3 {
		out, err := r.Send(ctx, s, delivery.Request{TargetSpec: []string{"*", "@ops", "@all"}[i], Priority: "now", Nonce: "n", Ciphertext: "c"})
		if err != nil || !out.Queued {
			t.Fatal(out, err)
		}
		sent = append(sent, out.MessageID)
	}
	var deliveries int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM deliveries").Scan(&deliveries); err != nil || deliveries != 0 {
		t.Fatalf("%d deliveries for broadcasts (%v); want none: a broadcast is one log entry", deliveries, err)
	}
	rows, err := q.ClaimLog(ctx, db.ClaimLogParams{Lim: 10, PresenceIds: []string{"bob-p", "carol-p"}, Froms: []int64{0, 0}, Epochs: []string{"", ""}, Conns: []int64{1, 1}})
	if err != nil {
		t.Fatal(err)
	}
	var readers, entries []db.ClaimLogRow
	for _, row := range rows {
		if row.Kind == "p" {
			readers = append(readers, row)
		} else {
			entries = append(entries, row)
		}
	}
	if len(readers) != 1 || readers[0].PresenceID != "bob-p" || readers[0].FromSeq != 0 || readers[0].Head != 3 || readers[0].Missed {
		t.Fatalf("log read: readers %+v; want bob's presence alone, from 0 to the head 3 (carol is revoked)", readers)
	}
	slices.SortFunc(entries, func(a, b db.ClaimLogRow) int { return int(a.Seq - b.Seq) })
	if len(entries) != 3 {
		t.Fatalf("log read: %d entries; want 3: %+v", len(entries), entries)
	}
	for i, row := range entries {
		if row.Seq != int64(i+1) || row.MessageID != sent[i] {
			t.Fatalf("entry %d: %+v; want position %d, %s", i, row, i+1, sent[i])
		}
	}
	// Read again from the last position: bob's presence alone, with no entry.
	rows, err = q.ClaimLog(ctx, db.ClaimLogParams{Lim: 10, PresenceIds: []string{"bob-p"}, Froms: []int64{3}, Epochs: []string{readers[0].Epoch}, Conns: []int64{1}})
	if err != nil || len(rows) != 1 || rows[0].Kind != "p" || rows[0].FromSeq != 3 {
		t.Fatalf("read past the head: %+v %v; want bob's row alone, from 3", rows, err)
	}
	// A socket that no longer owns the presence (taken over: the connection epoch moved on)
	// reads nothing, and cannot store the cursor.
	if _, err := d.Pool.Exec(ctx, "UPDATE presences SET connection_epoch = 2 WHERE id = 'bob-p'"); err != nil {
		t.Fatal(err)
	}
	rows, err = q.ClaimLog(ctx, db.ClaimLogParams{Lim: 10, PresenceIds: []string{"bob-p"}, Froms: []int64{0}, Epochs: []string{""}, Conns: []int64{1}})
	if err != nil || len(rows) != 0 {
		t.Fatalf("read by a socket taken over: %+v %v; want nothing", rows, err)
	}
	if n, err := q.AdvanceLogCursors(ctx, db.AdvanceLogCursorsParams{PresenceIds: []string{"bob-p"}, Epochs: []string{readers[0].Epoch}, Seqs: []int64{3}, Conns: []int64{1}}); err != nil || n != 0 {
		t.Fatalf("cursor stored by a socket taken over: %d %v; want 0", n, err)
	}
	// A presence whose cursor has no epoch (made by an instance of the release before the
	// log) reads from after the last entry stored before it connected, not from the start.
	if _, err := d.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, connected_at)
		VALUES ('dave-p', $1, $2, 'dave-p', 'dave-p', 1, '/', now() + interval '1 second')`, ids["bob"].MeshID, ids["bob"].MemberID); err != nil {
		t.Fatal(err)
	}
	rows, err = q.ClaimLog(ctx, db.ClaimLogParams{Lim: 10, PresenceIds: []string{"dave-p"}, Froms: []int64{0}, Epochs: []string{""}, Conns: []int64{1}})
	if err != nil || len(rows) != 1 || rows[0].FromSeq != 3 || !rows[0].Adopt || rows[0].Missed {
		t.Fatalf("read without an epoch: %+v %v; want from 3 (after what was stored before it connected), adopt", rows, err)
	}
}
