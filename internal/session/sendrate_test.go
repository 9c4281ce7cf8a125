package session_test

import (
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// A member's send limit is shared by its sessions on every instance.
func TestSendRateLimitAcrossInstances(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	env := map[string]string{"DATABASE_URL": d.URL, "SEND_RATE_BURST": "4", "SEND_RATE_LIMIT_PER_MIN": "1"}
	i1 := brokertest.Start(t, env)
	i2 := brokertest.Start(t, env)
	ctx := within(t, 20*time.Second)
	a1, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	a2, err := client.Dial(ctx, i2.WS, ids["alice"], client.Options{SessionID: "a2"})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	queued, limited := 0, 0
	for i := range 8 {
		c := a1
		if i%2 == 1 {
			c = a2
		}
		ack, err := c.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "eA=="})
		if err != nil {
			t.Fatal(err)
		}
		if ack["queued"] == true {
			queued++
		} else if e := ack.Str("error"); len(e) > 10 && e[:10] == "rate_limit" {
			limited++
		}
	}
	if queued != 4 || limited != 4 {
		t.Fatalf("burst 4 shared across instances: %d queued, %d rate-limited", queued, limited)
	}
}
