package session

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Claims and delivered marks run on connections without bitmap scans (see claimPool for why:
// a bitmap plan never retires the index entries of delivered rows, and the planner picks one
// from statistics that lag); every other query keeps them.
func TestClaimPoolHasNoBitmapScans(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	cp, err := claimPool(d.Pool)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	// Every connection of the pool, not only the first.
	conns := make([]string, 0, claimWorkers+1)
	for range claimWorkers + 1 {
		c, err := cp.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		var setting string
		if err := c.QueryRow(ctx, "SHOW enable_bitmapscan").Scan(&setting); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, setting)
	}
	for i, s := range conns {
		if s != "off" {
			t.Fatalf("claim pool connection %d: enable_bitmapscan = %q, want off", i, s)
		}
	}
	var setting string
	if err := d.Pool.QueryRow(ctx, "SHOW enable_bitmapscan").Scan(&setting); err != nil || setting != "on" {
		t.Fatalf("main pool enable_bitmapscan = %q, %v; want on (ReleaseLeases needs a bitmap scan)", setting, err)
	}
	if got := cp.Config().MaxConns; got != claimWorkers+2 {
		t.Fatalf("claim pool MaxConns = %d, want %d (the claim workers and the two mark loops)", got, claimWorkers+2)
	}
}

// A hello that read its member just before a revoke committed registers after the revoke's
// notification found nothing to close: register reports it, for a minute after the revoke,
// so the new session is closed too.
func TestRegisterReportsARecentRevoke(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	h := NewHub(Config{InstanceID: "i"}, d.Pool, nil, metrics.New(), slog.New(slog.DiscardHandler))
	h.closeRevoked("revoked-member") // no session of it here yet
	late := &Session{hub: h, presenceID: "p1", member: auth.Member{ID: "revoked-member", MeshID: "m"}}
	if !h.register(late) {
		t.Fatal("register did not report the member revoked a moment ago")
	}
	other := &Session{hub: h, presenceID: "p2", member: auth.Member{ID: "someone-else", MeshID: "m"}}
	if h.register(other) {
		t.Fatal("register reported a member nobody revoked")
	}
	h.mu.Lock()
	h.revokedAt["revoked-member"] = time.Now().Add(-2 * time.Minute)
	h.mu.Unlock()
	h.closeRevoked("another") // prunes entries older than a minute
	again := &Session{hub: h, presenceID: "p3", member: auth.Member{ID: "revoked-member", MeshID: "m"}}
	if h.register(again) {
		t.Fatal("register still reports a revoke from two minutes ago (its hello would have been refused)")
	}
}
