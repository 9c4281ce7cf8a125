package jobs

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestQueueDepthCountsPendingUnexpiredDeliveries(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	_, err := d.Pool.Exec(ctx, `
		INSERT INTO meshes (id, name, slug) VALUES ('m1', 'mesh', 'mesh');
		INSERT INTO members (id, mesh_id, peer_pubkey, display_name) VALUES ('a', 'm1', 'aa', 'A'), ('b', 'm1', 'bb', 'B');
		INSERT INTO messages (id, mesh_id, sender_member_id, sender_member_pubkey, target_spec, target_kind, priority, nonce, ciphertext, expires_at)
		VALUES ('msg1', 'm1', 'a', 'aa', 'bb', 'member', 'now', 'n', 'c', now() + interval '1 day');
		INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at, delivered_at) VALUES
			('msg1', 'm1', 'b', NULL, 'now', now() + interval '1 day', NULL),        -- pending, for the member
			('msg1', 'm1', 'b', 'p1', 'now', now() + interval '1 day', NULL),        -- pending, for a session
			('msg1', 'm1', 'b', 'p1', 'now', now() + interval '1 day', NULL),        -- pending, for a session
			('msg1', 'm1', 'b', NULL, 'now', now() + interval '1 day', now()),       -- delivered
			('msg1', 'm1', 'b', 'p1', 'now', now() + interval '1 day', now()),       -- delivered
			('msg1', 'm1', 'b', NULL, 'now', now() - interval '1 second', NULL),     -- expired
			('msg1', 'm1', 'b', 'p1', 'now', now() - interval '1 second', NULL);     -- expired`)
	if err != nil {
		t.Fatal(err)
	}
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "depth"})
	gauge.Set(-1)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { RunQueueDepth(runCtx, db.New(d.Pool), gauge, slog.New(slog.DiscardHandler)); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(gauge) != 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done // returns promptly once its context ends
	if got := testutil.ToFloat64(gauge); got != 3 {
		t.Fatalf("queue depth %v, want 3 (pending and unexpired only, for members and for sessions)", got)
	}
}

func TestJitterStaysWithinTenPercent(t *testing.T) {
	for range 1000 {
		j := Jitter(30 * time.Second)
		if j < 27*time.Second || j > 33*time.Second {
			t.Fatalf("Jitter(30s) = %s", j)
		}
	}
}
