package audit

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
)

// Event is one audit entry to append. Payload must be metadata only.
type Event struct {
	MeshID      string
	Type        string // peer_joined, peer_left, message_sent, session_replaced, …
	ActorID     string // member id; "" = none (hashed as null)
	ActorName   string
	Payload     any // marshalled to JSON
	payloadJSON string
	canonical   string
}

// LockKey is the advisory lock guarding one mesh's chain: the first 8 bytes of
// SHA-256("audit:" + meshID), big-endian, as a positive int64 — the original's key, so a
// mixed fleet of old and new brokers still serialises on the same lock.
func LockKey(meshID string) int64 {
	sum := sha256.Sum256([]byte("audit:" + meshID))
	return int64(binary.BigEndian.Uint64(sum[:8]) & 0x7fffffffffffffff)
}

// Append writes events to their meshes' chains inside tx: per mesh (in mesh-id order, so
// concurrent batches never deadlock) it takes the chain's advisory lock, reads the tail
// inside the transaction, and links the new rows to it. With any number of instances
// appending at once the chain stays one unforked line. now is the rows' created_at.
func Append(ctx context.Context, q *db.Queries, events []Event, now time.Time) error {
	if len(events) == 0 {
		return nil
	}
	now = TruncateToMillis(now)
	for i := range events {
		raw, err := marshalPayload(events[i].Payload)
		if err != nil {
			return fmt.Errorf("audit %s payload: %w", events[i].Type, err)
		}
		canon, err := CanonicalJSON([]byte(raw))
		if err != nil {
			return fmt.Errorf("audit %s payload: %w", events[i].Type, err)
		}
		events[i].payloadJSON, events[i].canonical = raw, canon
	}
	// Stable sort keeps each mesh's events in the caller's order.
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b Event) int { return cmp.Compare(a.MeshID, b.MeshID) })

	p := db.InsertAuditRowsParams{}
	for start := 0; start < len(sorted); {
		meshID := sorted[start].MeshID
		end := start
		for end < len(sorted) && sorted[end].MeshID == meshID {
			end++
		}
		if err := q.AuditLockMesh(ctx, LockKey(meshID)); err != nil {
			return fmt.Errorf("audit lock: %w", err)
		}
		prev, err := q.AuditTail(ctx, meshID)
		if errors.Is(err, pgx.ErrNoRows) {
			prev = Genesis
		} else if err != nil {
			return fmt.Errorf("audit tail: %w", err)
		}
		for _, e := range sorted[start:end] {
			var actor *string
			if e.ActorID != "" {
				actor = &e.ActorID
			}
			h := Hash(prev, e.MeshID, e.Type, actor, e.canonical, now)
			p.MeshIds = append(p.MeshIds, e.MeshID)
			p.EventTypes = append(p.EventTypes, e.Type)
			p.ActorMemberIds = append(p.ActorMemberIds, e.ActorID)
			p.ActorDisplayNames = append(p.ActorDisplayNames, e.ActorName)
			p.Payloads = append(p.Payloads, e.payloadJSON)
			p.PrevHashes = append(p.PrevHashes, prev)
			p.Hashes = append(p.Hashes, h)
			p.CreatedAts = append(p.CreatedAts, now)
			prev = h
		}
		start = end
	}
	if err := q.InsertAuditRows(ctx, p); err != nil {
		return fmt.Errorf("insert audit rows: %w", err)
	}
	return nil
}

// VerifyMesh loads a mesh's whole chain and verifies it.
func VerifyMesh(ctx context.Context, q *db.Queries, meshID string) (Verification, error) {
	rows, err := q.AuditChain(ctx, meshID)
	if err != nil {
		return Verification{}, fmt.Errorf("load audit chain: %w", err)
	}
	chain := make([]Row, len(rows))
	for i, r := range rows {
		chain[i] = Row{ID: r.ID, MeshID: r.MeshID, EventType: r.EventType, Actor: r.ActorMemberID,
			Payload: r.Payload, PrevHash: r.PrevHash, Hash: r.Hash, CreatedAt: r.CreatedAt}
	}
	return Verify(chain), nil
}

func marshalPayload(v any) (string, error) {
	if v == nil {
		return "{}", nil
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	}
	s, err := CanonicalValue(v)
	return s, err
}
