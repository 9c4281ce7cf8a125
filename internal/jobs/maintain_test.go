package jobs_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/jobs"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Three instances running the status sweep at the same moment: one runs it.
func TestStatusSweepRunsOncePerPeriodAcrossInstances(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	hubs := make([]*jobs.Runner, 3)
	for i := range hubs {
		hubs[i] = jobs.New(jobs.Config{InstanceID: "i" + string(rune('0'+i)), StatusTTL: time.Minute, SweepPeriod: time.Hour},
			d.Pool, nil, metrics.New(), slog.New(slog.DiscardHandler))
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

// Ended presences are kept for PRESENCE_RETENTION — a direct message to a recently ended
// session's key still goes to its member — and purged once they have been ended longer; live
// presences are never purged, however old.
func TestPurgeRemovesPresencesEndedBeforeTheRetention(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	ids := brokertest.Mesh(t, q, "alice", "bob")
	a, b := ids["alice"], ids["bob"]
	keyOf := func(c byte) string { return string([]byte{c, c}) + b.Pubkey[2:] }
	for _, p := range []struct {
		id    string
		key   string
		ended string // SQL for ended_at
	}{
		{"long-ended", keyOf('a'), "now() - interval '2 hours'"},
		{"just-ended", keyOf('b'), "now() - interval '30 minutes'"},
		{"live", keyOf('c'), "NULL"},
	} {
		if _, err := d.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, session_pubkey, pid, cwd, connected_at, ended_at)
			VALUES ($1, $2, $3, 's:' || $4, $1, $4, 1, '/', now() - interval '3 hours', `+p.ended+`)`, p.id, b.MeshID, b.MemberID, p.key); err != nil {
			t.Fatal(err)
		}
	}
	h := jobs.New(jobs.Config{InstanceID: "i0", PresenceRetention: time.Hour},
		d.Pool, nil, metrics.New(), slog.New(slog.DiscardHandler))
	if err := h.PurgeOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var left []string
	rows, err := d.Pool.Query(ctx, "SELECT id FROM presences ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != "just-ended" || left[1] != "live" {
		t.Fatalf("presences after the purge: %v, want [just-ended live]", left)
	}

	r := delivery.NewRouter(d.Pool, time.Hour)
	defer r.Close()
	s := delivery.Sender{MeshID: a.MeshID, MemberID: a.MemberID, MemberPubkey: a.Pubkey, PresenceID: "alice-p"}
	kept, err := r.Send(ctx, s, delivery.Request{TargetSpec: keyOf('b'), Priority: "now", Nonce: "n", Ciphertext: "c"})
	if err != nil || !kept.Queued {
		t.Fatalf("DM to a session key ended 30 minutes ago: %+v, %v; want it queued for the member", kept, err)
	}
	var toMember int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM deliveries WHERE message_id = $1 AND recipient_member_id = $2 AND recipient_presence_id IS NULL",
		kept.MessageID, b.MemberID).Scan(&toMember); err != nil || toMember != 1 {
		t.Fatalf("copies for bob's member: %d, %v; want 1", toMember, err)
	}
	gone, err := r.Send(ctx, s, delivery.Request{TargetSpec: keyOf('a'), Priority: "now", Nonce: "n", Ciphertext: "c"})
	if err != nil || gone.Queued || gone.Reason != "no_recipient" {
		t.Fatalf("DM to a purged session key: %+v, %v; want refused with no_recipient", gone, err)
	}
}
