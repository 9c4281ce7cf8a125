package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/ids"
)

// StoreResult reports a -storebatch run.
type StoreResult struct {
	Mode           string  `json:"mode"`
	BatchSize      int     `json:"batchSize"`
	Connections    int     `json:"connections"`
	Deliveries     bool    `json:"deliveries"`
	Audit          bool    `json:"audit"`
	Seconds        float64 `json:"seconds"`
	Messages       int64   `json:"messages"`
	MessagesPerSec float64 `json:"messagesPerSec"`
}

// runStore measures the broker's store statement alone, with no broker and no sockets:
// c connections each store batches of n direct messages (256-byte payloads, one delivery
// row each, as the Router writes them, each message recording its transaction for the audit
// chainer) for the run's duration. Dropping the delivery rows, or the audit transaction id
// (and so the message's entry in the audit index), shows what each costs inside the
// statement. A broker running on the same database chains the messages' audit events in the
// background, as it would its own.
func runStore(ctx context.Context, o options, n, c int, deliveries, auditRows bool) (StoreResult, error) {
	pool, err := pgxpool.New(ctx, o.dsn)
	if err != nil {
		return StoreResult{}, err
	}
	defer pool.Close()
	q := db.New(pool)
	mesh, err := admin.CreateMesh(ctx, q, fmt.Sprintf("meshload store %s", time.Now().Format(time.RFC3339Nano)))
	if err != nil {
		return StoreResult{}, fmt.Errorf("provision mesh: %w", err)
	}
	var members [2]admin.MemberAdded
	for i := range members {
		pub, _ := client.NewKey()
		if members[i], err = admin.AddMember(ctx, q, mesh.MeshID, pub, fmt.Sprintf("store-%d", i), "member"); err != nil {
			return StoreResult{}, fmt.Errorf("provision member: %w", err)
		}
	}
	ct := make([]byte, 344) // 256 bytes in base64
	for i := range ct {
		ct[i] = 'x'
	}
	batch := func() db.StoreBatchParams {
		p := db.StoreBatchParams{DMessageIds: []string{}, DMeshIds: []string{}, DMemberIds: []string{}, DPresenceIds: []string{},
			DPriorities: []string{}, DExpiresAts: []time.Time{}, Audited: auditRows}
		now := time.Now()
		for range n {
			id := ids.NewTimeOrdered()
			p.Ids = append(p.Ids, id)
			p.MeshIds = append(p.MeshIds, mesh.MeshID)
			p.SenderMemberIds = append(p.SenderMemberIds, members[0].MemberID)
			p.SenderPresenceIds = append(p.SenderPresenceIds, "")
			p.SenderSessionPubkeys = append(p.SenderSessionPubkeys, "")
			p.SenderMemberPubkeys = append(p.SenderMemberPubkeys, "pa")
			p.SenderNames = append(p.SenderNames, "store-0")
			p.TargetSpecs = append(p.TargetSpecs, "pb")
			p.TargetKinds = append(p.TargetKinds, "member")
			p.Logged = append(p.Logged, false)
			p.Priorities = append(p.Priorities, "now")
			p.Nonces = append(p.Nonces, "nonce-nonce-nonce-nonce-nonce-nonce")
			p.Ciphertexts = append(p.Ciphertexts, string(ct))
			p.ClientMessageIds = append(p.ClientMessageIds, ids.New())
			p.ExpiresAts = append(p.ExpiresAts, now.Add(time.Hour))
			if deliveries {
				p.DMessageIds = append(p.DMessageIds, id)
				p.DMeshIds = append(p.DMeshIds, mesh.MeshID)
				p.DMemberIds = append(p.DMemberIds, members[1].MemberID)
				p.DPresenceIds = append(p.DPresenceIds, "")
				p.DPriorities = append(p.DPriorities, "now")
				p.DExpiresAts = append(p.DExpiresAts, now.Add(time.Hour))
			}
		}
		return p
	}
	fmt.Fprintf(os.Stderr, "meshload: storing %d-message batches from %d connections for %s\n", n, c, o.duration)
	done := make(chan int64)
	errs := make(chan error, c)
	start := time.Now()
	for range c {
		go func() {
			var stored int64
			for time.Since(start) < o.duration && ctx.Err() == nil {
				if _, err := q.StoreBatch(ctx, batch()); err != nil {
					errs <- err
					break
				}
				stored += int64(n)
			}
			done <- stored
		}()
	}
	res := StoreResult{Mode: "storebatch", BatchSize: n, Connections: c, Deliveries: deliveries, Audit: auditRows}
	for range c {
		res.Messages += <-done
	}
	res.Seconds = time.Since(start).Seconds()
	res.MessagesPerSec = float64(res.Messages) / res.Seconds
	select {
	case err := <-errs:
		return res, fmt.Errorf("store batch: %w", err)
	default:
	}
	return res, nil
}
