package session_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/session"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Three instances running the status sweep at the same moment: one runs it.
func TestStatusSweepRunsOncePerPeriodAcrossInstances(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	hubs := make([]*session.Hub, 3)
	for i := range hubs {
		hubs[i] = session.NewHub(session.Config{InstanceID: "i" + string(rune('0'+i)), StatusTTL: time.Minute, SweepPeriod: time.Hour},
			d.Pool, delivery.NewRouter(d.Pool, time.Hour), metrics.New(), slog.New(slog.DiscardHandler))
	}
	for round := range 3 {
		var wg sync.WaitGroup
		ran := make([]bool, len(hubs))
		start := make(chan struct{})
		for i, h := range hubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var err error
				ran[i], err = h.SweepStatusesOnce(ctx)
				if err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		n := 0
		for _, r := range ran {
			if r {
				n++
			}
		}
		// The first round runs exactly once; later rounds fall inside the same hour-long period.
		want := 0
		if round == 0 {
			want = 1
		}
		if n != want {
			t.Fatalf("round %d: the sweep ran %d times, want %d", round, n, want)
		}
	}
}

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
