package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/devdb"
	"github.com/meshbroker/meshbroker/internal/migrate"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// A database outage under connected peers: sends are refused with a clear ack (nothing is
// claimed as queued), the sockets stay up, and once Postgres is back messages flow again
// and what was stored before the outage is delivered.
func TestDatabaseOutageUnderPeers(t *testing.T) {
	t.Parallel()
	cluster, inst, ids, alice, bob, ctx := outagePeers(t)
	defer alice.Close()
	defer bob.Close()
	// Stored before the outage, not yet acknowledged by bob: must survive it.
	before, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "YmVmb3Jl"})
	if err != nil || before["queued"] != true {
		t.Fatal(before, err)
	}
	if _, err := bob.NextMessage(ctx); err != nil {
		t.Fatal(err)
	}

	if err := cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	ack, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "ZHVyaW5n"})
	if err != nil {
		t.Fatalf("send during the outage: %v", err)
	}
	if ack["queued"] != false || ack.Str("error") == "" {
		t.Fatalf("send during the outage was acked %v; want queued:false with an error", ack)
	}

	if err := cluster.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Bob reconnects (his unacknowledged push comes again), then new sends flow.
	_ = bob.Drop()
	var back *client.Client
	for deadline := time.Now().Add(20 * time.Second); ; {
		back, err = client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b", Capabilities: []string{"client_ack"}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reconnect after the outage: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer back.Close()
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if p, err := back.NextMessage(wctx); err != nil || p.Str("messageId") != before.Str("messageId") {
		dump, _ := pgxpool.New(context.Background(), cluster.URL())
		rows, _ := dump.Query(context.Background(), "SELECT d.id, coalesce(d.recipient_presence_id,'-'), coalesce(d.claimed_by,'-'), coalesce(d.lease_expires_at::text,'-'), coalesce(d.delivered_at::text,'-'), now()::text FROM deliveries d")
		for rows.Next() {
			var a int64
			var b, c, e, f, g string
			_ = rows.Scan(&a, &b, &c, &e, &f, &g)
			t.Logf("delivery %d presence=%s claimed=%s lease=%s delivered=%s now=%s", a, b, c, e, f, g)
		}
		prow, _ := dump.Query(context.Background(), "SELECT id, coalesce(disconnected_at::text,'-'), coalesce(ended_at::text,'-'), connection_epoch, coalesce(instance_id,'-') FROM presences")
		for prow.Next() {
			var a, b, c, e string
			var n int64
			_ = prow.Scan(&a, &b, &c, &n, &e)
			t.Logf("presence %s disc=%s ended=%s epoch=%d inst=%s (back=%s)", a, b, c, n, e, back.Ack.Str("presenceId"))
		}
		t.Fatalf("message stored before the outage: %v %v", p, err)
	}
	for {
		after, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "YWZ0ZXI="})
		if err != nil {
			t.Fatal(err)
		}
		if after["queued"] == true {
			if p, err := back.NextMessage(ctx); err != nil || p.Str("messageId") != after.Str("messageId") {
				t.Fatalf("after the outage: %v %v", p, err)
			}
			return
		}
		time.Sleep(200 * time.Millisecond) // the pool is still reconnecting
	}
}

// A client_ack sent while the database is down is written once it is back, within seconds,
// rather than left to the 30 s lease (which would deliver the message again).
func TestClientAckDuringAnOutageIsRetried(t *testing.T) {
	t.Parallel()
	cluster, _, ids, alice, bob, ctx := outagePeers(t)
	defer alice.Close()
	defer bob.Close()
	sent, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "YWNr"})
	if err != nil || sent["queued"] != true {
		t.Fatal(sent, err)
	}
	push, err := bob.NextMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := bob.Write(ctx, map[string]any{"type": "client_ack", "messageId": push.Str("messageId")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the ack's write fails meanwhile
	if err := cluster.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	check, err := pgxpool.New(ctx, cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	for {
		var delivered bool
		err := check.QueryRow(ctx, `SELECT delivered_at IS NOT NULL FROM deliveries WHERE message_id = $1`, push.Str("messageId")).Scan(&delivered)
		if err == nil && delivered {
			break
		}
		if time.Since(restarted) > 10*time.Second {
			t.Fatalf("the acknowledged push was not marked delivered within 10 s of the restart (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("ack written %v after the restart", time.Since(restarted).Round(100*time.Millisecond))
}

// outagePeers starts a broker on a cluster of its own (one a test may kill and restart),
// with alice connected and bob connected as a client_ack client.
func outagePeers(t *testing.T) (*devdb.Cluster, *brokertest.Instance, map[string]client.Identity, *client.Client, *client.Client, context.Context) {
	t.Helper()
	cluster := testdb.NewDurableCluster(t)
	ctx := within(t, 60*time.Second)
	m, err := migrate.Open(cluster.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	m.Close()
	pool, err := pgxpool.New(ctx, cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	ids := brokertest.Mesh(t, db.New(pool), "alice", "bob")
	pool.Close()
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": cluster.URL()})
	alice, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b", Capabilities: []string{"client_ack"}})
	if err != nil {
		_ = alice.Close()
		t.Fatal(err)
	}
	return cluster, inst, ids, alice, bob, ctx
}
