package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// storeUnannounced stores a direct message from one member to another's presence the way
// the Router does, but sends no wake-up: as if the notification were lost. It returns the
// message id.
func storeUnannounced(ctx context.Context, t *testing.T, q *db.Queries, from, to client.Identity, targetSpec, kind, presenceID, ciphertext string) string {
	t.Helper()
	id, now := ids.NewTimeOrdered(), time.Now()
	if _, err := q.StoreBatch(ctx, db.StoreBatchParams{
		Ids: []string{id}, MeshIds: []string{from.MeshID}, SenderMemberIds: []string{from.MemberID},
		SenderPresenceIds: []string{""}, SenderSessionPubkeys: []string{""}, SenderMemberPubkeys: []string{from.Pubkey},
		TargetSpecs: []string{targetSpec}, TargetKinds: []string{kind}, Priorities: []string{"now"},
		Nonces: []string{"n"}, Ciphertexts: []string{ciphertext}, ClientMessageIds: []string{""},
		ExpiresAts: []time.Time{now.Add(time.Hour)}, Audited: true,
		DMessageIds: []string{id}, DMeshIds: []string{from.MeshID}, DMemberIds: []string{to.MemberID},
		DPresenceIds: []string{presenceID}, DPriorities: []string{"now"}, DExpiresAts: []time.Time{now.Add(time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// A message whose wake-up notification was lost (stored here without one) still reaches
// its recipient: the poll claims for presences no claim has looked at for a poll interval.
func TestPollDeliversWhatNoNotificationAnnounced(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	q := db.New(d.Pool)
	mesh := brokertest.Mesh(t, q, "alice", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := within(t, 40*time.Second)
	bob, err := client.Dial(ctx, i1.WS, mesh["bob"], client.Options{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	start := time.Now()
	id := storeUnannounced(ctx, t, q, mesh["alice"], mesh["bob"], mesh["bob"].Pubkey, "member", bob.Ack.Str("presenceId"), "bG9zdA==")
	p, err := bob.NextMessage(ctx)
	if err != nil || p.Str("messageId") != id {
		t.Fatalf("the unannounced message: %v %v", p, err)
	}
	// The poll runs every 5 s and skips a presence claimed less than 5 s ago (bob's connect
	// claimed): about 10 s at most; the bound leaves room for a loaded machine.
	if waited := time.Since(start); waited > 20*time.Second {
		t.Errorf("delivered only after %s", waited)
	}
}
