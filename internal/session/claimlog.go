package session

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/protocol"
)

// Reading the mesh log: how broadcast and group messages reach a presence (migration 14).
// A broadcast is one row, an entry of its mesh's log (package delivery); its wake-up names
// the mesh, and every local presence of the mesh reads the log after its cursor
// (claimLog). Each entry is decided for the presence now (delivery.Reaches): the ones for
// it are pushed, the others skipped. The cursor moves when the pushes are done — written to
// the socket, or acknowledged by a client_ack client — and is stored (AdvanceLogCursors) in
// batches by logMarkLoop, one row update per presence however many entries it covers. A
// skipped tail moves the cursor with a cursor-only frame, queued behind the pushes so it is
// never stored ahead of a push not yet written.
//
// Leases: a client_ack client's pushes not acknowledged within the lease are read again
// from the stored cursor (expireLogLeases); a new socket of the presence (a reconnect inside
// the grace window, a takeover) starts from the stored cursor. Both are at-least-once, as
// for direct messages: a client deduplicates by messageId.

// logCursor is one socket's position in its mesh's log.
type logCursor struct {
	mu      sync.Mutex
	epoch   string           // the log epoch the positions count in; "" before the first read
	gen     uint64           // bumped when positions are read again (lease expiry, new epoch): older reads and writes are void
	next    int64            // the highest position read by this socket's claims
	written int64            // the highest position whose frame (push or cursor-only) was written
	flight  []logFlight      // client_ack pushes not yet acknowledged, in log order
	byID    map[string]int64 // their positions, by message id
	stored  int64            // the highest position handed to logMarkLoop
	paused  bool             // reads stopped with maxLogInFlight unacknowledged; an ack resumes them

	// The scope of the last read (delivery.LogReader), kept while the presence's groups and
	// its member's grants read the same: parsed once, not once per read.
	reader                 delivery.LogReader
	readerGroups, readerGr []byte
	readerVisible          bool
	readerOK               bool
}

// scope is the presence's reader for a read's groups, visibility and grants. Caller holds mu.
func (c *logCursor) scope(memberID string, visible bool, groups, grants []byte) delivery.LogReader {
	if !c.readerOK || visible != c.readerVisible || !bytes.Equal(groups, c.readerGroups) || !bytes.Equal(grants, c.readerGr) {
		c.reader = delivery.NewLogReader(memberID, visible, groups, grants)
		c.readerGroups, c.readerGr, c.readerVisible, c.readerOK = groups, grants, visible, true
	}
	return c.reader
}

type logFlight struct {
	seq   int64
	at    time.Time
	acked bool
}

// maxLogInFlight bounds a client_ack socket's unacknowledged broadcast pushes: past it, the
// socket reads no more of the log until acknowledgements come (the deliveries' leases bound
// the same for direct messages), so a client that never acknowledges costs bounded memory.
const maxLogInFlight = 4096

// done is the position everything up to which is done for the presence: written, and for a
// client_ack client also acknowledged. Caller holds mu.
func (c *logCursor) done() int64 {
	d := c.written
	for len(c.flight) > 0 && c.flight[0].acked {
		c.flight = c.flight[1:]
	}
	if len(c.flight) > 0 && c.flight[0].seq-1 < d {
		d = c.flight[0].seq - 1
	}
	return d
}

// logMark is a cursor to store.
type logMark struct {
	presenceID string
	conn       int64 // the socket's connection epoch: only the presence's owner stores
	epoch      string
	seq        int64
}

// advanceLog stores the cursor if it moved (caller must not hold c.mu).
func (s *Session) advanceLog() {
	c := &s.log
	c.mu.Lock()
	d, epoch := c.done(), c.epoch
	moved := d > c.stored && epoch != ""
	if moved {
		c.stored = d
	}
	c.mu.Unlock()
	if moved {
		s.hub.logMarks <- logMark{presenceID: s.presenceID, conn: s.epoch, epoch: epoch, seq: d}
	}
}

// logWrittenTo records that the frame at position seq (of a read in gen) reached the socket.
func (s *Session) logWrittenTo(seq int64, gen uint64) {
	c := &s.log
	c.mu.Lock()
	if gen == c.gen && seq > c.written {
		c.written = seq
	}
	c.mu.Unlock()
	s.advanceLog()
}

// logAck takes a client_ack's message ids: those of log entries in flight are acknowledged
// here (no row to update: the cursor moves); the rest are returned, for the deliveries.
func (s *Session) logAck(ids []string) (rest []string) {
	c := &s.log
	c.mu.Lock()
	hit := false
	for _, id := range ids {
		seq, ok := c.byID[id]
		if !ok {
			rest = append(rest, id)
			continue
		}
		delete(c.byID, id)
		if i, found := slices.BinarySearchFunc(c.flight, seq, func(f logFlight, seq int64) int { return cmp.Compare(f.seq, seq) }); found {
			c.flight[i].acked, hit = true, true
		}
	}
	resume := c.paused && hit
	if resume {
		c.paused = false
	}
	c.mu.Unlock()
	if hit {
		s.advanceLog()
	}
	if resume {
		s.hub.markLog(s.presenceID)
	}
	return rest
}

// claimLog reads the log for presences held here and returns what to queue on each socket.
func (h *Hub) claimLog(ctx context.Context, batch []dirtyEntry) map[*Session][]outFrame {
	byID := make(map[string]*Session, len(batch))
	gens := make(map[*Session]uint64, len(batch))
	p := db.ClaimLogParams{Lim: claimBatch}
	for _, e := range batch {
		if e.s.isClosed() {
			continue
		}
		c := &e.s.log
		c.mu.Lock()
		if len(c.flight) >= maxLogInFlight {
			c.paused = true
			c.mu.Unlock()
			continue
		}
		byID[e.s.presenceID] = e.s
		gens[e.s] = c.gen
		p.PresenceIds = append(p.PresenceIds, e.s.presenceID)
		p.Froms = append(p.Froms, c.next)
		p.Epochs = append(p.Epochs, c.epoch)
		p.Conns = append(p.Conns, e.s.epoch)
		c.mu.Unlock()
	}
	if len(p.PresenceIds) == 0 {
		return nil
	}
	start := time.Now()
	rows, err := h.claimQ.ClaimLog(ctx, p)
	h.metrics.ClaimDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("claim log", "presences", len(p.PresenceIds), "err", err)
		}
		return nil
	}
	for _, s := range byID {
		s.lastLogClaim.Store(start.UnixNano())
	}
	// The entries, once per mesh in log order (ranges read for different positions may
	// overlap), then each presence's share of them.
	entries := map[string][]*db.ClaimLogRow{}
	for i := range rows {
		if r := &rows[i]; r.Kind == "e" {
			entries[r.MeshID] = append(entries[r.MeshID], r)
		}
	}
	for mesh, es := range entries {
		slices.SortFunc(es, func(a, b *db.ClaimLogRow) int { return cmp.Compare(a.Seq, b.Seq) })
		entries[mesh] = slices.CompactFunc(es, func(a, b *db.ClaimLogRow) bool { return a.Seq == b.Seq })
	}
	frames := map[string][]byte{} // an entry reaches many of the presences with the same frame
	out := make(map[*Session][]outFrame, len(byID))
	for i := range rows {
		if r := &rows[i]; r.Kind == "p" {
			if s := byID[r.PresenceID]; s != nil {
				if fs := h.logFrames(s, r, gens[s], entries[r.MeshID], frames); len(fs) > 0 {
					out[s] = fs
				}
			}
		}
	}
	return out
}

// logFrames is one presence's share of a log read: the entries of its mesh (in log order)
// in (from, min(from+claimBatch, head)], those that reach it as pushes, then a cursor-only
// frame past the rest. A read begun before the socket's positions were reset (gen) is
// dropped and done again.
func (h *Hub) logFrames(s *Session, p *db.ClaimLogRow, gen uint64, entries []*db.ClaimLogRow, frames map[string][]byte) []outFrame {
	upto := min(p.FromSeq+claimBatch, p.Head)
	var out []outFrame
	c := &s.log
	c.mu.Lock()
	defer c.mu.Unlock()
	reader := c.scope(p.MemberID, p.Visible, p.Groups, p.PeerGrants)
	if gen != c.gen {
		defer h.markLog(s.presenceID)
		return nil
	}
	if c.epoch != p.Epoch {
		// The first read of this socket, or the log was recreated: positions start over,
		// from the stored cursor (which needs no storing again unless it moved past a loss
		// or had no epoch).
		c.gen++
		c.epoch, c.next, c.written, c.stored = p.Epoch, p.FromSeq, p.FromSeq, p.FromSeq
		if p.Missed || p.Adopt {
			c.stored = 0
		}
		c.flight, c.byID = nil, nil
	}
	if p.Missed {
		out = append(out, outFrame{data: h.missedFrame(s)})
	}
	i, _ := slices.BinarySearchFunc(entries, p.FromSeq+1, func(e *db.ClaimLogRow, seq int64) int { return cmp.Compare(e.Seq, seq) })
	lastPushed := int64(0)
	for _, r := range entries[i:] {
		if r.Seq > upto {
			break
		}
		ok, byGrant := reader.Reaches(delivery.LogEntry{
			SenderMemberID: r.SenderMemberID, SenderMemberPubkey: r.SenderMemberPubkey,
			SenderSessionPubkey: r.SenderSessionPubkey, TargetKind: r.TargetKind, TargetSpec: r.TargetSpec,
		})
		if byGrant {
			h.metrics.MessagesDroppedByGrant.WithLabelValues("broadcast").Inc()
		}
		if !ok {
			continue
		}
		data, ok := frames[r.MessageID]
		if !ok {
			push := protocol.Push{
				Type: "push", MessageID: r.MessageID, MeshID: r.MeshID, SenderPubkey: r.SenderSessionPubkey,
				SenderMemberPubkey: r.SenderMemberPubkey, Priority: r.Priority, Nonce: r.Nonce,
				Ciphertext: r.Ciphertext, CreatedAt: audit.FormatTime(r.CreatedAt), ClientMessageID: r.ClientMessageID,
			}
			if push.SenderPubkey == "" {
				push.SenderPubkey = r.SenderMemberPubkey
			}
			var err error
			if data, err = json.Marshal(push); err != nil {
				continue
			}
			frames[r.MessageID] = data
		}
		if s.clientAck {
			if c.byID == nil {
				c.byID = map[string]int64{}
			}
			c.flight = append(c.flight, logFlight{seq: r.Seq, at: time.Now()})
			c.byID[r.MessageID] = r.Seq
		}
		out = append(out, outFrame{data: data, msgID: r.MessageID, priority: r.Priority, storedAt: r.CreatedAt, logSeq: r.Seq, logGen: c.gen})
		lastPushed = r.Seq
	}
	last := max(upto, p.FromSeq)
	if last > lastPushed && (last > p.FromSeq || p.Missed || p.Adopt) {
		// Entries skipped (not for it, or gone) after the last push, purged ones, or a
		// cursor without an epoch: the cursor passes them once what is queued before it
		// has been written.
		out = append(out, outFrame{logSeq: last, logGen: c.gen})
	}
	c.next = max(c.next, last)
	if upto < p.Head {
		defer h.markLog(s.presenceID) // there is more (after c.mu is released)
	}
	return out
}

// missedFrame is the system push telling a presence that log entries after its cursor were
// lost to it (purged by QUEUE_TTL while it was away, or the log was recreated): broadcasts
// it will never receive, said rather than skipped silently.
func (h *Hub) missedFrame(s *Session) []byte {
	h.metrics.LogCursorsMissed.Inc()
	b, _ := json.Marshal(systemPushFrame(s.member.MeshID, "messages_missed", map[string]any{"reason": "log_truncated"}))
	return b
}

// expireLogLeases reads the log again, from the stored cursor, for client_ack sockets with
// a push not acknowledged within the lease.
func (h *Hub) expireLogLeases() {
	cut := time.Now().Add(-h.cfg.LeaseDuration)
	h.mu.Lock()
	var expired []*Session
	for _, s := range h.byPresence {
		if !s.clientAck {
			continue
		}
		s.log.mu.Lock()
		c := &s.log
		c.done()
		if len(c.flight) > 0 && c.flight[0].at.Before(cut) {
			// Read again from the first unacknowledged push; what is queued or being read
			// meanwhile (an older gen) no longer moves the cursor.
			c.gen++
			c.next = c.flight[0].seq - 1
			c.written = c.next
			c.flight, c.byID, c.paused = nil, nil, false
			expired = append(expired, s)
		}
		s.log.mu.Unlock()
	}
	h.mu.Unlock()
	for _, s := range expired {
		h.metrics.Redeliveries.Inc()
		h.markLog(s.presenceID)
	}
}

// logMarkInterval is how often logMarkLoop stores the cursors that moved. A cursor stored
// late costs nothing but duplicates after a crash (at-least-once), and message_status
// reporting a delivery up to this much later; storing each move at once cost one row
// update per recipient per claim — 50 per broadcast to 50 idle peers.
const logMarkInterval = 50 * time.Millisecond

// logMarkLoop stores cursors in batches: one update per presence however many entries its
// cursor passed since the last batch. A batch that fails is kept (merged with later marks)
// and retried a second later: a cursor not stored only means entries read again after a
// reconnect.
func (h *Hub) logMarkLoop(ctx context.Context) {
	pending := map[string]logMark{}
	add := func(m logMark) {
		if old, ok := pending[m.presenceID]; !ok || old.epoch != m.epoch || old.conn != m.conn || m.seq > old.seq {
			pending[m.presenceID] = m
		}
	}
	flush := func() bool {
		if len(pending) == 0 {
			return true
		}
		var p db.AdvanceLogCursorsParams
		for _, m := range pending {
			p.PresenceIds = append(p.PresenceIds, m.presenceID)
			p.Conns = append(p.Conns, m.conn)
			p.Epochs = append(p.Epochs, m.epoch)
			p.Seqs = append(p.Seqs, m.seq)
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := h.claimQ.AdvanceLogCursors(fctx, p); err != nil {
			h.log.Warn("store log cursors", "n", len(pending), "err", err)
			return false
		}
		clear(pending)
		return true
	}
	t := time.NewTicker(logMarkInterval)
	defer t.Stop()
	var retryAt time.Time
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case m := <-h.logMarks:
					add(m)
				default:
					flush()
					return
				}
			}
		case m := <-h.logMarks:
			add(m)
		case now := <-t.C:
			if now.After(retryAt) && !flush() {
				retryAt = now.Add(time.Second)
			}
		}
	}
}
