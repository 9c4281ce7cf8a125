package main_test

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// A SIGKILLed instance is found dead by another within 10 s (INSTANCE_HEARTBEAT 2 s,
// INSTANCE_DEAD_AFTER 7 s, the defaults): its sessions enter their grace window, so peers
// reconnecting elsewhere take them over and messages to them wait for that reconnect.
func TestKilledInstanceIsFoundDeadWithinTenSeconds(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	survivor := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	victim := startServe(t, "DATABASE_URL="+d.URL)
	victim.waitStatus(t, "/health/ready", http.StatusOK, 30*time.Second)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wsVictim := "ws" + strings.TrimPrefix(victim.base, "http") + "/ws"
	alice, err := client.Dial(ctx, wsVictim, ids["alice"], client.Options{SessionID: "alice-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Drop()
	bob, err := client.Dial(ctx, survivor.WS, ids["bob"], client.Options{SessionID: "bob-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	presence := alice.Ack.Str("presenceId")

	killed := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	for {
		var inGrace bool
		if err := d.Pool.QueryRow(ctx, `SELECT disconnected_at IS NOT NULL FROM presences WHERE id = $1`, presence).Scan(&inGrace); err != nil {
			t.Fatal(err)
		}
		if inGrace {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("the killed instance's session was not moved to its grace window within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("found dead after %v", time.Since(killed).Round(100*time.Millisecond))
}

// An instance whose heartbeat was late enough for the others to declare it dead takes its
// live sockets' presences back from their grace window on its next beat, before the window
// could end them under open sockets.
func TestLateInstanceTakesItsPresencesBack(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, err := client.Dial(ctx, inst.WS, ids["alice"], client.Options{SessionID: "alice-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	presence := alice.Ack.Str("presenceId")
	var instanceID string
	if err := d.Pool.QueryRow(ctx, `SELECT instance_id FROM presences WHERE id = $1`, presence).Scan(&instanceID); err != nil {
		t.Fatal(err)
	}
	// What a stalled heartbeat looks like to the others, and what their job then does.
	if _, err := d.Pool.Exec(ctx, `UPDATE instances SET heartbeat_at = now() - interval '1 hour' WHERE id = $1`, instanceID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE presences SET disconnected_at = now(), instance_id = NULL WHERE id = $1`, presence); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var back bool
		if err := d.Pool.QueryRow(ctx, `SELECT disconnected_at IS NULL AND instance_id = $2 FROM presences WHERE id = $1`, presence, instanceID).Scan(&back); err != nil {
			t.Fatal(err)
		}
		if back {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the live socket's presence was not taken back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-alice.Done():
		t.Fatalf("the socket closed: %v", alice.Err())
	default:
	}
}

// A SIGTERM drain writes every closed socket's presence into its grace window before the
// pool closes: none is left attached to the stopped instance, and no write fails with
// "context canceled" on the way out.
func TestDrainWritesPresencesBeforeThePoolCloses(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	p := startServe(t, "DATABASE_URL="+d.URL, "MAX_CONNECTIONS_PER_MESH=1000")
	p.waitStatus(t, "/health/ready", http.StatusOK, 30*time.Second)
	names := make([]string, 40)
	for i := range names {
		names[i] = "peer" + string(rune('A'+i%26)) + string(rune('a'+i/26))
	}
	ids := brokertest.Mesh(t, db.New(d.Pool), names...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := "ws" + strings.TrimPrefix(p.base, "http") + "/ws"
	for _, n := range names {
		c, err := client.Dial(ctx, ws, ids[n], client.Options{SessionID: n})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Drop()
	}
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var attached int
	if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM presences WHERE ended_at IS NULL AND disconnected_at IS NULL`).Scan(&attached); err != nil {
		t.Fatal(err)
	}
	if attached != 0 {
		t.Errorf("%d presences still attached to the drained instance", attached)
	}
	if log := p.stderr.String(); strings.Contains(log, "disconnect presence") || strings.Contains(log, "context canceled") {
		t.Errorf("the drain logged failed writes:\n%s", log)
	}
}
