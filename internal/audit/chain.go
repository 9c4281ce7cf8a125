package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/pglock"
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
	createdAt   time.Time
}

// LockKey is the advisory lock guarding one mesh's chain: the first 8 bytes of
// SHA-256("audit:" + meshID), big-endian, as a positive int64 — the original's key, so a
// mixed fleet of old and new brokers still serialises on the same lock.
func LockKey(meshID string) int64 { return pglock.Key("audit:" + meshID) }

func prepare(events []Event, now time.Time) error {
	for i := range events {
		raw, err := marshalPayload(events[i].Payload)
		if err != nil {
			return fmt.Errorf("audit %s payload: %w", events[i].Type, err)
		}
		canon, err := CanonicalJSON([]byte(raw))
		if err != nil {
			return fmt.Errorf("audit %s payload: %w", events[i].Type, err)
		}
		events[i].payloadJSON, events[i].canonical, events[i].createdAt = raw, canon, now
	}
	return nil
}

// Append writes events to their meshes' chains inside the caller's transaction: per mesh (in
// mesh-id order, so concurrent writers never deadlock) it takes the chain's advisory lock,
// reads the tail inside the transaction, and links the new rows to it. With any number of
// instances appending at once the chain stays one unforked line. now is the rows'
// created_at. The lock is held until the caller commits: use Enqueue on hot paths.
func Append(ctx context.Context, q *db.Queries, events []Event, now time.Time) error {
	if len(events) == 0 {
		return nil
	}
	if err := prepare(events, TruncateToMillis(now)); err != nil {
		return err
	}
	// Stable sort keeps each mesh's events in the caller's order.
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b Event) int { return cmp.Compare(a.MeshID, b.MeshID) })
	p := db.InsertAuditRowsParams{}
	for start := 0; start < len(sorted); {
		end := start
		for end < len(sorted) && sorted[end].MeshID == sorted[start].MeshID {
			end++
		}
		if err := link(ctx, q, sorted[start:end], &p); err != nil {
			return err
		}
		start = end
	}
	if err := q.InsertAuditRows(ctx, p); err != nil {
		return fmt.Errorf("insert audit rows: %w", err)
	}
	return nil
}

// link locks one mesh's chain, reads its tail and adds the hashed rows to p.
func link(ctx context.Context, q *db.Queries, events []Event, p *db.InsertAuditRowsParams) error {
	meshID := events[0].MeshID
	if err := q.XactLock(ctx, LockKey(meshID)); err != nil {
		return fmt.Errorf("audit lock: %w", err)
	}
	prev, err := q.AuditTail(ctx, meshID)
	if errors.Is(err, pgx.ErrNoRows) {
		prev = Genesis
	} else if err != nil {
		return fmt.Errorf("audit tail: %w", err)
	}
	for _, e := range events {
		var actor *string
		if e.ActorID != "" {
			actor = &e.ActorID
		}
		h := Hash(prev, e.MeshID, e.Type, actor, e.canonical, e.createdAt)
		p.MeshIds = append(p.MeshIds, e.MeshID)
		p.EventTypes = append(p.EventTypes, e.Type)
		p.ActorMemberIds = append(p.ActorMemberIds, e.ActorID)
		p.ActorDisplayNames = append(p.ActorDisplayNames, e.ActorName)
		p.Payloads = append(p.Payloads, e.payloadJSON)
		p.PrevHashes = append(p.PrevHashes, prev)
		p.Hashes = append(p.Hashes, h)
		p.CreatedAts = append(p.CreatedAts, e.createdAt)
		prev = h
	}
	return nil
}

// Enqueue records events inside the caller's transaction without touching the chain (no
// lock): they commit or roll back with the data they describe, and the chainer
// (ChainPending) links them into the chain shortly after.
func Enqueue(ctx context.Context, q *db.Queries, events []Event, now time.Time) error {
	if len(events) == 0 {
		return nil
	}
	now = TruncateToMillis(now)
	p := db.InsertAuditPendingParams{}
	for _, e := range events {
		raw, err := marshalPayload(e.Payload)
		if err != nil {
			return fmt.Errorf("audit %s payload: %w", e.Type, err)
		}
		p.MeshIds = append(p.MeshIds, e.MeshID)
		p.EventTypes = append(p.EventTypes, e.Type)
		p.ActorMemberIds = append(p.ActorMemberIds, e.ActorID)
		p.ActorDisplayNames = append(p.ActorDisplayNames, e.ActorName)
		p.Payloads = append(p.Payloads, raw)
		p.CreatedAts = append(p.CreatedAts, now)
	}
	if err := q.InsertAuditPending(ctx, p); err != nil {
		return fmt.Errorf("enqueue audit events: %w", err)
	}
	return nil
}

// chainBatch bounds the rows of each source one chaining transaction reads (a variable so a
// test can make it small).
var chainBatch = 5000

// ChainPending links a mesh's pending events and its stored messages' message_sent events
// into its chain, in transactions of up to chainBatch rows of each source, until none is
// left; it returns how many it linked. Each round reads the horizon (the oldest transaction
// still running) once and takes only what transactions below it wrote, from both sources, in
// transaction-id order: a transaction that took its id after another committed has a later
// id, so the chain follows causality (a peer_left queued after a send comes after its
// message_sent), and nothing can later appear behind what was taken.
func ChainPending(ctx context.Context, pool *pgxpool.Pool, meshID string) (int, error) {
	total := 0
	for {
		n, more, err := chainRound(ctx, pool, meshID)
		if err != nil {
			return total, err
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// chained is one event with the id of the transaction that wrote it.
type chained struct {
	xid int64
	e   Event
}

// chainRound is one transaction of ChainPending. more reports that a source filled its
// batch (there may be more below the horizon).
func chainRound(ctx context.Context, pool *pgxpool.Pool, meshID string) (n int, more bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		// The lock first: taking rows and appending them is one step of the chain.
		if err := q.XactLock(ctx, LockKey(meshID)); err != nil {
			return fmt.Errorf("audit lock: %w", err)
		}
		horizon, err := q.AuditHorizon(ctx)
		if err != nil {
			return fmt.Errorf("audit horizon: %w", err)
		}
		rows, err := q.PendingAuditEvents(ctx, db.PendingAuditEventsParams{MeshID: meshID, Horizon: horizon, Lim: int32(chainBatch)})
		if err != nil {
			return fmt.Errorf("read pending audit events: %w", err)
		}
		msgs, err := q.UnchainedMessages(ctx, db.UnchainedMessagesParams{MeshID: meshID, Horizon: horizon, Lim: int32(chainBatch)})
		if err != nil {
			return fmt.Errorf("read unchained messages: %w", err)
		}
		pending := make([]chained, 0, len(rows))
		for _, r := range rows {
			canon, err := CanonicalJSON(r.Payload)
			if err != nil {
				return fmt.Errorf("audit payload %d: %w", r.ID, err)
			}
			e := Event{MeshID: r.MeshID, Type: r.EventType, payloadJSON: string(r.Payload), canonical: canon, createdAt: r.CreatedAt}
			if r.ActorMemberID != nil {
				e.ActorID = *r.ActorMemberID
			}
			if r.ActorDisplayName != nil {
				e.ActorName = *r.ActorDisplayName
			}
			pending = append(pending, chained{r.AuditXid, e})
		}
		sent := make([]chained, 0, len(msgs))
		for _, m := range msgs {
			sent = append(sent, chained{m.AuditXid, MessageSent(meshID, m)})
		}
		// A source that filled its batch may have more rows just past its last one; the other
		// source must not get ahead of them. Both are cut at the smallest such last
		// transaction (a transaction writes to one source only, so the cut transaction's rows
		// are either all here or continue, in order, next round).
		cut := int64(math.MaxInt64)
		if len(pending) == chainBatch {
			cut, more = min(cut, pending[len(pending)-1].xid), true
		}
		if len(sent) == chainBatch {
			cut, more = min(cut, sent[len(sent)-1].xid), true
		}
		pending = slices.DeleteFunc(pending, func(c chained) bool { return c.xid > cut })
		keptMsgs := 0
		for keptMsgs < len(sent) && sent[keptMsgs].xid <= cut {
			keptMsgs++
		}
		sent = sent[:keptMsgs]
		if len(pending) == 0 && len(sent) == 0 {
			return nil
		}
		if len(pending) > 0 {
			ids := make([]int64, len(pending))
			for i := range pending {
				ids[i] = rows[i].ID // pending keeps a prefix of rows (they are in xid order)
			}
			if _, err := q.DeleteAuditPending(ctx, ids); err != nil {
				return fmt.Errorf("delete pending audit events: %w", err)
			}
		}
		if len(sent) > 0 {
			last := msgs[len(sent)-1]
			if err := q.MoveAuditCursor(ctx, db.MoveAuditCursorParams{MeshID: meshID, MessageXid: last.AuditXid, MessageID: last.ID}); err != nil {
				return fmt.Errorf("move audit cursor: %w", err)
			}
		}
		// Each source is in (transaction, id) order; merge them by transaction.
		events := append(pending, sent...)
		slices.SortStableFunc(events, func(a, b chained) int { return cmp.Compare(a.xid, b.xid) })
		linked := make([]Event, len(events))
		for i, c := range events {
			linked[i] = c.e
		}
		p := db.InsertAuditRowsParams{}
		if err := link(ctx, q, linked, &p); err != nil {
			return err
		}
		n = len(events)
		return q.InsertAuditRows(ctx, p)
	})
	if err != nil {
		return 0, false, err
	}
	return n, more, nil
}

// ChainCaughtUp chains a mesh until everything committed before it was called is in the
// chain — the horizon (oldest running transaction) has passed the transaction id that was
// next when it was called — or until wait runs out, whichever comes first. audit_query,
// audit_verify and `broker audit verify` call it, so they see every event written before
// they were asked, even while other transactions hold the horizon back for a moment.
func ChainCaughtUp(ctx context.Context, pool *pgxpool.Pool, meshID string, wait time.Duration) error {
	q := db.New(pool)
	want, err := q.AuditNextXid(ctx)
	if err != nil {
		return fmt.Errorf("audit next transaction: %w", err)
	}
	// Waiting costs one cheap statement per 10 ms; the chaining itself runs once, when the
	// horizon has passed the target (or the wait is over: then it chains what it can, and the
	// caller reads a chain that may lack the newest events, as a reader that came a moment
	// earlier would).
	deadline := time.Now().Add(wait)
	for {
		horizon, err := q.AuditHorizon(ctx)
		if err != nil {
			return fmt.Errorf("audit horizon: %w", err)
		}
		// The round reads its own horizon, at least this one: once this one has passed the
		// target, the round takes everything below it.
		if horizon >= want || time.Now().After(deadline) {
			_, err := ChainPending(ctx, pool, meshID)
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// MessageSent is the message_sent event of a stored message: payload {priority, targetSpec}
// (metadata only), by its sender, at the time it was stored (to the millisecond, as the
// chain renders times). The canonical form is built directly — both values are strings, and
// the keys are already in canonical order — and doubles as the stored payload.
func MessageSent(meshID string, m db.UnchainedMessagesRow) Event {
	var b strings.Builder
	b.Grow(32 + len(m.Priority) + len(m.TargetSpec))
	b.WriteString(`{"priority":`)
	writeString(&b, m.Priority)
	b.WriteString(`,"targetSpec":`)
	writeString(&b, m.TargetSpec)
	b.WriteByte('}')
	canon := b.String()
	e := Event{MeshID: meshID, Type: "message_sent", ActorID: m.SenderMemberID, payloadJSON: canon, canonical: canon,
		createdAt: TruncateToMillis(m.CreatedAt)}
	if m.SenderName != nil {
		e.ActorName = *m.SenderName
	}
	return e
}

// Chainer links pending events into their meshes' chains. Meshes noted by the send path
// (Note) are chained on the next tick; every sweep interval it also asks the database which
// meshes have pending events (events enqueued elsewhere: hellos, closes, other instances'
// sends whose chainer died). Any number of instances may run one: the chain lock
// serialises them per mesh.
type Chainer struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	mu    sync.Mutex
	noted map[string]time.Time // mesh → when it was noted (and not chained since); guarded by mu
}

// NewChainer returns a Chainer; start it with Run.
func NewChainer(pool *pgxpool.Pool, log *slog.Logger) *Chainer {
	return &Chainer{pool: pool, log: log, noted: map[string]time.Time{}}
}

// Note marks meshes that have just enqueued events. Safe for concurrent use.
func (c *Chainer) Note(meshIDs ...string) {
	c.mu.Lock()
	for _, m := range meshIDs {
		if _, ok := c.noted[m]; !ok {
			c.noted[m] = time.Now()
		}
	}
	c.mu.Unlock()
}

// Run chains noted meshes every tick and all meshes with pending events every sweep, until
// ctx ends.
func (c *Chainer) Run(ctx context.Context, tick, sweep time.Duration) {
	q := db.New(c.pool)
	// Once at start (a logical restore means new brokers): it reads all of audit_pending.
	if ahead, err := q.AuditCursorsAhead(ctx); err == nil && len(ahead) > 0 {
		c.log.Error("audit cursor ahead of the cluster: the database was copied logically into a cluster with a lower transaction counter; new events of these meshes are not chained (docs/operations.md, Moving the database)",
			"meshes", ahead)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var lastSweep time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		notedAt := c.noted
		c.noted = map[string]time.Time{}
		c.mu.Unlock()
		meshes := slices.Collect(maps.Keys(notedAt))
		if time.Since(lastSweep) >= sweep {
			lastSweep = time.Now()
			pending, err := q.MeshesWithPendingAudit(ctx)
			if err != nil && ctx.Err() == nil {
				c.log.Warn("audit chainer", "err", err)
			}
			unchained, err := q.MeshesWithUnchainedMessages(ctx)
			if err != nil && ctx.Err() == nil {
				c.log.Warn("audit chainer", "err", err)
			}
			meshes = append(append(meshes, pending...), unchained...)
			slices.Sort(meshes)
			meshes = slices.Compact(meshes)
		}
		for _, m := range meshes {
			if _, err := ChainPending(ctx, c.pool, m); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("audit chainer", "mesh", m, "err", err)
				}
				continue
			}
			// What a transaction older than the events still holds back is retried on the
			// next tick (its batch noted the mesh once, and that note is spent) — for one
			// sweep interval after the note at most: a transaction left open for longer
			// would otherwise have every such mesh retried ten times a second; the sweep
			// picks them up from then on.
			at, noted := notedAt[m]
			if !noted || time.Since(at) >= sweep {
				continue
			}
			backlog, err := q.AuditBacklog(ctx, m)
			if err != nil && ctx.Err() == nil {
				c.log.Warn("audit chainer", "mesh", m, "err", err)
			}
			if backlog {
				c.mu.Lock()
				if _, ok := c.noted[m]; !ok {
					c.noted[m] = at
				}
				c.mu.Unlock()
			}
		}
	}
}

// VerifyMesh verifies a mesh's whole chain, a page at a time. Pending events are not part of
// the chain yet; callers that want them included run ChainPending first.
func VerifyMesh(ctx context.Context, q *db.Queries, meshID string) (Verification, error) {
	v := NewVerifier()
	after := int64(0)
	for {
		rows, err := q.AuditChainPage(ctx, db.AuditChainPageParams{MeshID: meshID, AfterID: after, Lim: verifyPage})
		if err != nil {
			return Verification{}, fmt.Errorf("load audit chain: %w", err)
		}
		for _, r := range rows {
			v.Add(Row{ID: r.ID, MeshID: r.MeshID, EventType: r.EventType, Actor: r.ActorMemberID,
				Payload: r.Payload, PrevHash: r.PrevHash, Hash: r.Hash, CreatedAt: r.CreatedAt})
		}
		if len(rows) < verifyPage {
			return v.Result(), nil
		}
		after = rows[len(rows)-1].ID
	}
}

// verifyPage is how many rows VerifyMesh reads at a time: its memory, whatever the chain's
// length (a whole chain read at once held 150 MiB per 200 000 rows).
const verifyPage = 2000

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
	// Plain JSON: the hash is computed from the canonical form of the value as it reads back
	// from jsonb (prepare, ChainPending), so canonicalising here would be work done twice.
	raw, err := json.Marshal(v)
	return string(raw), err
}
