package session

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// The claim: the middle of the delivery path. A send is written as rows (package delivery:
// StoreBatch, then a wake-up NOTIFY): a direct message as a delivery, a broadcast or group
// message as an entry of its mesh's log. The notification, or the poll, marks the
// recipient's presences held here dirty (for deliveries, for the log, or both); a claim
// worker leases their deliverable rows in one statement, reads the log after their cursors
// in another (claimlog.go), and enqueues both on the sockets (Session.enqueue, session.go),
// whose drainer writes them; markLoop then marks deliveries delivered and logMarkLoop stores
// the cursors (client_ack clients do both with their ack).

type dirtyEntry struct {
	s        *Session
	fromPoll bool
	dm       bool // claim deliveries
	log      bool // read the mesh log
}

// markDirty queues a claim of deliveries for presences held here.
func (h *Hub) markDirty(presenceIDs ...string) { h.mark(false, true, false, presenceIDs...) }

// markLog queues a read of the mesh log for presences held here.
func (h *Hub) markLog(presenceIDs ...string) { h.mark(false, false, true, presenceIDs...) }

func (h *Hub) mark(fromPoll, dm, log bool, presenceIDs ...string) {
	h.mu.Lock()
	n := 0
	for _, id := range presenceIDs {
		if s := h.byPresence[id]; s != nil {
			e, ok := h.dirty[id]
			if ok && e.s == s && (e.dm || !dm) && (e.log || !log) && (!e.fromPoll || fromPoll) {
				continue // already queued for as much
			}
			if !ok || e.s != s {
				e = dirtyEntry{s: s, fromPoll: fromPoll}
			}
			e.fromPoll = e.fromPoll && fromPoll
			e.dm, e.log = e.dm || dm, e.log || log
			h.dirty[id] = e
			n++
		}
	}
	h.mu.Unlock()
	if n > 0 {
		h.kickClaim()
	}
}

func (h *Hub) pollLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.expireLogLeases()
			h.pollStale(time.Now().Add(-h.cfg.PollInterval))
		}
	}
}

// pollStale claims for the local presences no claim has started for since before: a claim
// sees every row committed before it started, so a presence claimed since then can only
// have missed rows committed after that claim, which the next poll covers. Under traffic
// the poll thus costs nothing; for a quiet presence it is the guarantee behind the hints
// (missed notifications, expired client_ack leases).
func (h *Hub) pollStale(before time.Time) {
	cut := before.UnixNano()
	h.mu.Lock()
	var dm, log []string
	for id, s := range h.byPresence {
		if s.lastClaim.Load() < cut {
			dm = append(dm, id)
		}
		if s.lastLogClaim.Load() < cut {
			log = append(log, id)
		}
	}
	h.mu.Unlock()
	h.mark(true, true, false, dm...)
	h.mark(true, false, true, log...)
}

// claimLoop is one claim worker. It claims for dirty presences, many at once (a share of
// what is dirty, up to claimPresences per statement), so a burst of wake-ups costs a few
// round trips, not one per recipient, and the workers' statements run side by side. A
// presence is claimed by one worker at a time, so its pushes stay in order; wake-ups that
// arrive meanwhile wait for the next claim.
func (h *Hub) claimLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		}
		for ctx.Err() == nil {
			batch, more := h.takeDirty()
			if len(batch) == 0 {
				break
			}
			if more {
				h.kickClaim() // another worker takes the next share
			}
			h.claim(ctx, batch)
			h.mu.Lock()
			for _, e := range batch {
				delete(h.claiming, e.s.presenceID)
			}
			again := len(h.dirty) > 0
			h.mu.Unlock()
			if again {
				h.kickClaim() // wake-ups that waited for this claim
			}
		}
	}
}

// takeDirty takes a worker's share of the dirty presences that no worker is claiming for:
// those woken by a notification first, then the poll's. more reports that some are left.
func (h *Hub) takeDirty() (batch []dirtyEntry, more bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Deliveries are claimed with row locks, in statements side by side (a share per
	// worker); reading the log takes no lock and costs little per presence, so presences that
	// only read the log go in one statement: a broadcast wakes every presence of its mesh,
	// and four statements of a quarter each cost about four times one.
	dm := 0
	for _, e := range h.dirty {
		if e.dm {
			dm++
		}
	}
	share := claimPresences
	if dm > 0 {
		share = min(claimPresences, max(claimMinShare, (dm+claimWorkers-1)/claimWorkers))
	}
	batch = make([]dirtyEntry, 0, min(len(h.dirty), share))
	for _, wantPoll := range []bool{false, true} {
		for id, e := range h.dirty {
			if len(batch) == share {
				return batch, true
			}
			if e.fromPoll == wantPoll && !h.claiming[id] {
				delete(h.dirty, id)
				h.claiming[id] = true
				batch = append(batch, e)
			}
		}
	}
	return batch, false
}

func (h *Hub) kickClaim() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

const (
	claimBatch     = 256 // rows per presence per claim
	claimPresences = 64  // presences per claim statement at most
	claimMinShare  = 8   // presences per claim statement at least, when that many are dirty
	claimWorkers   = 4   // claim statements in flight at once
)

// claim pushes what is deliverable for a set of presences held here: their deliveries and
// their mesh log's next entries, as each entry of the batch asks.
func (h *Hub) claim(ctx context.Context, batch []dirtyEntry) {
	var dm, log []dirtyEntry
	for _, e := range batch {
		if e.dm {
			dm = append(dm, e)
		}
		if e.log {
			log = append(log, e)
		}
	}
	var direct, logged map[*Session][]outFrame
	if len(dm) > 0 {
		direct = h.claimDeliveries(ctx, dm)
	}
	if len(log) > 0 {
		logged = h.claimLog(ctx, log)
	}
	for s, fs := range direct {
		if lf, ok := logged[s]; ok {
			fs = mergePushes(fs, lf)
			delete(logged, s)
		}
		for _, f := range fs {
			s.enqueue(f)
		}
	}
	for s, fs := range logged {
		for _, f := range fs {
			s.enqueue(f)
		}
	}
}

// mergePushes merges a socket's direct pushes and log frames, each in its own order, into
// the order the messages were stored (created_at, then the time-ordered id), so one
// sender's direct and broadcast messages reach a recipient in the order sent. Log frames
// that are no push (messages_missed, cursor-only) keep their place among the log's.
func mergePushes(direct, logged []outFrame) []outFrame {
	out := make([]outFrame, 0, len(direct)+len(logged))
	before := func(a, b outFrame) bool { // a direct push a goes before log frame b
		if b.msgID == "" {
			return b.logSeq > 0 // messages_missed goes first; a cursor-only frame waits for nothing
		}
		if c := a.storedAt.Compare(b.storedAt); c != 0 {
			return c < 0
		}
		return a.msgID < b.msgID
	}
	i, j := 0, 0
	for i < len(direct) && j < len(logged) {
		if before(direct[i], logged[j]) {
			out = append(out, direct[i])
			i++
		} else {
			out = append(out, logged[j])
			j++
		}
	}
	out = append(out, direct[i:]...)
	return append(out, logged[j:]...)
}

// claimDeliveries leases the deliverable rows of a set of presences held here and returns
// their pushes, per socket in stored order.
func (h *Hub) claimDeliveries(ctx context.Context, batch []dirtyEntry) map[*Session][]outFrame {
	byID := make(map[string]dirtyEntry, len(batch))
	p := db.ClaimDeliveriesParams{Lim: claimBatch, LeaseSeconds: h.cfg.LeaseDuration.Seconds()}
	for _, e := range batch {
		if e.s.isClosed() {
			continue
		}
		byID[e.s.presenceID] = e
		p.PresenceIds = append(p.PresenceIds, e.s.presenceID)
		p.MemberIds = append(p.MemberIds, e.s.member.ID)
		p.Epochs = append(p.Epochs, e.s.epoch)
	}
	if len(p.PresenceIds) == 0 {
		return nil
	}
	start := time.Now()
	rows, err := h.claimQ.ClaimDeliveries(ctx, p)
	h.metrics.ClaimDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("claim deliveries", "presences", len(p.PresenceIds), "err", err)
		}
		return nil
	}
	for _, e := range byID {
		e.s.lastClaim.Store(start.UnixNano()) // this claim saw every row committed before start
	}
	// FIFO per recipient.
	slices.SortFunc(rows, func(a, b db.ClaimDeliveriesRow) int {
		if c := strings.Compare(a.PresenceID, b.PresenceID); c != 0 {
			return c
		}
		return cmp.Compare(a.DeliveryID, b.DeliveryID)
	})
	counts := map[string]int{}
	frames := make(map[string][]byte, len(rows))
	out := make(map[*Session][]outFrame, len(byID))
	for _, r := range rows {
		e, ok := byID[r.PresenceID]
		if !ok {
			continue
		}
		counts[r.PresenceID]++
		if r.Attempts > 1 {
			h.metrics.Redeliveries.Inc()
		}
		// A multicast message reaches many of the claimed presences with the same frame:
		// encode it once per claim (the bytes are only read from then on).
		data, ok := frames[r.MessageID]
		if !ok {
			push := protocol.Push{
				Type: "push", MessageID: r.MessageID, MeshID: r.MeshID, SenderPubkey: r.SenderPubkey,
				SenderMemberPubkey: r.SenderMemberPubkey, Priority: r.Priority, Nonce: r.Nonce,
				Ciphertext: r.Ciphertext, CreatedAt: audit.FormatTime(r.CreatedAt),
			}
			if r.ClientMessageID != nil {
				push.ClientMessageID = *r.ClientMessageID
			}
			var err error
			if data, err = json.Marshal(push); err != nil {
				continue
			}
			frames[r.MessageID] = data
		}
		f := outFrame{data: data, msgID: r.MessageID, priority: r.Priority, storedAt: r.CreatedAt}
		if !e.s.clientAck {
			f.deliveryID = r.DeliveryID
		}
		out[e.s] = append(out[e.s], f)
	}
	for id, n := range counts {
		if byID[id].fromPoll {
			h.metrics.PollsWithWork.Inc()
		}
		if n == claimBatch {
			h.markDirty(id) // there may be more
		}
	}
	return out
}

// markLoop marks written deliveries delivered, in batches.
func (h *Hub) markLoop(ctx context.Context) {
	var ids []int64
	flush := func() {
		if len(ids) == 0 {
			return
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if _, err := h.claimQ.MarkDelivered(fctx, ids); err != nil {
			// The rows keep their lease; when it expires they are delivered again
			// (at-least-once), never lost.
			h.log.Warn("mark delivered", "n", len(ids), "err", err)
		}
		cancel()
		ids = ids[:0]
	}
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case id := <-h.delivered:
					ids = append(ids, id)
				default:
					flush()
					return
				}
			}
		case id := <-h.delivered:
			ids = append(ids, id)
		drain:
			for len(ids) < 1024 {
				select {
				case id := <-h.delivered:
					ids = append(ids, id)
				default:
					break drain
				}
			}
			flush()
		}
	}
}

// claimPool opens the connections claims and delivered marks run on: the main pool's
// settings, with bitmap scans off. A claim reads each recipient's pending rows through the
// partial index deliveries_*_pending_idx, which also holds entries for rows delivered since
// the last vacuum (the delivered_at update moves a row out of the index's predicate but leaves
// its old entry behind). A plain index scan marks such entries dead the first time it meets
// them, so later claims skip them; a bitmap scan never does, and visits every one of them, on
// its heap page, in every claim. The planner picks one or the other from the table's
// statistics, which lag on this fast-churning table: with a bitmap plan, claims measured 5×
// slower and growing through a 10 s run (538 index entries and 140 heap pages read per
// recipient for 8 live rows, docs/benchmarks.md). Nothing else runs on these connections, so
// no other query loses bitmap scans (ReleaseLeases needs one).
//
// The setting is made with SET on each new connection, not as a startup parameter:
// connection poolers in front of Postgres (PgBouncer, Supavisor) refuse unknown startup
// parameters, which would fail every claim.
func claimPool(main *pgxpool.Pool) (*pgxpool.Pool, error) {
	pc := main.Config().Copy()
	mainAfterConnect := pc.AfterConnect
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if mainAfterConnect != nil {
			if err := mainAfterConnect(ctx, conn); err != nil {
				return err
			}
		}
		if _, err := conn.Exec(ctx, "SET enable_bitmapscan = off"); err != nil {
			return fmt.Errorf("claim connection: %w", err)
		}
		return nil
	}
	pc.MaxConns = claimWorkers + 2 // the workers and the mark loops
	pc.MinConns = 0
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("claim pool: %w", err)
	}
	return pool, nil
}
