package session_test

import (
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// A lease taken for a presence by an older socket is void for the socket that took the
// presence over: here the old socket's claim "commits" after the takeover released the
// presence's leases (the row is leased for an hour under epoch 1 once epoch 2 holds the
// presence), and the new socket still gets the message at its next claim.
func TestLeaseOfAnOlderSocketIsVoid(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	mesh := brokertest.Mesh(t, q, "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 30*time.Second)
	_, sess := client.NewKey()
	first, err := client.Dial(ctx, i1.WS, mesh["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	bob, err := client.Dial(ctx, i1.WS, mesh["bob"], client.Options{SessionKey: sess})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	presence := bob.Ack.Str("presenceId")

	alice := mesh["alice"]
	late := storeUnannounced(ctx, t, q, alice, mesh["bob"], bob.SessionPub, "session", presence, "bGF0ZQ==")
	if _, err := d.Pool.Exec(ctx, `UPDATE deliveries SET claimed_by = $1, claimed_epoch = 1, attempts = 1,
		lease_expires_at = now() + interval '1 hour' WHERE message_id = $2`, presence, late); err != nil {
		t.Fatal(err)
	}

	a, err := client.Dial(ctx, i1.WS, alice, client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ack, err := a.Send(ctx, client.Message{Target: bob.SessionPub, Priority: "now", Nonce: "n", Ciphertext: "bm93"})
	if err != nil || ack["queued"] != true {
		t.Fatalf("send: %v %v", ack, err)
	}
	got := map[string]bool{}
	for range 2 {
		p, err := bob.NextMessage(ctx)
		if err != nil {
			t.Fatalf("after %v: %v (the message leased under the old socket's epoch never came)", got, err)
		}
		got[p.Str("messageId")] = true
	}
	if !got[late] || !got[ack.Str("messageId")] {
		t.Fatalf("received %v, want %s and %s", got, late, ack.Str("messageId"))
	}
}
