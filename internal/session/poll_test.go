package session_test

import (
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

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
	presence := bob.Ack.Str("presenceId")
	alice, bobM := mesh["alice"], mesh["bob"]
	id, now := ids.NewTimeOrdered(), time.Now()
	if _, err := q.StoreBatch(ctx, db.StoreBatchParams{
		Ids: []string{id}, MeshIds: []string{alice.MeshID}, SenderMemberIds: []string{alice.MemberID},
		SenderPresenceIds: []string{""}, SenderSessionPubkeys: []string{""}, SenderMemberPubkeys: []string{alice.Pubkey},
		TargetSpecs: []string{bobM.Pubkey}, TargetKinds: []string{"member"}, Priorities: []string{"now"},
		Nonces: []string{"n"}, Ciphertexts: []string{"bG9zdA=="}, ClientMessageIds: []string{""},
		ExpiresAts:  []time.Time{now.Add(time.Hour)},
		DMessageIds: []string{id}, DMeshIds: []string{alice.MeshID}, DMemberIds: []string{bobM.MemberID},
		DPresenceIds: []string{presence}, DPriorities: []string{"now"}, DExpiresAts: []time.Time{now.Add(time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	p, err := bob.NextMessage(ctx)
	if err != nil || p.Str("messageId") != id {
		t.Fatalf("the unannounced message: %v %v", p, err)
	}
	// The poll runs every 5 s and skips a presence claimed less than 5 s ago (bob's connect
	// claimed): about 10 s at most; the bound leaves room for a loaded machine.
	if waited := time.Since(now); waited > 20*time.Second {
		t.Errorf("delivered only after %s", waited)
	}
}
