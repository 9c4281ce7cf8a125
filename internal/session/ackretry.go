package session

import (
	"context"
	"sync"
	"time"

	"github.com/meshbroker/meshbroker/db"
)

// A client_ack whose write fails (the database is down or restarting) is kept and retried,
// with backoff, rather than left to the lease: otherwise every push acknowledged during an
// outage would be delivered again 30 s later. Retries are bounded in count and in time: an
// ack older than ackRetryFor is dropped (its lease has long expired and the message been
// delivered again, which the client dedupes by messageId).
const (
	ackRetryFirst   = 200 * time.Millisecond
	ackRetryMax     = 2 * time.Second
	ackRetryFor     = 2 * time.Minute
	maxRetriedAcks  = 100000 // message ids waiting for a retry, per instance
	ackRetryTimeout = 5 * time.Second
)

type pendingAck struct {
	presenceID string
	ids        []string
	since      time.Time
	next       time.Time
	wait       time.Duration
}

// ackRetrier holds the acks to retry.
type ackRetrier struct {
	mu      sync.Mutex
	pending []pendingAck
	ids     int
}

func newAckRetrier() *ackRetrier { return &ackRetrier{} }

// add keeps an ack whose write failed; false when the bound is reached (dropped).
func (r *ackRetrier) add(presenceID string, ids []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids+len(ids) > maxRetriedAcks {
		return false
	}
	now := time.Now()
	r.pending = append(r.pending, pendingAck{presenceID: presenceID, ids: ids, since: now, next: now.Add(ackRetryFirst), wait: ackRetryFirst})
	r.ids += len(ids)
	return true
}

// due takes the acks whose retry time has come.
func (r *ackRetrier) due(now time.Time) []pendingAck {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []pendingAck
	kept := r.pending[:0]
	for _, a := range r.pending {
		if !a.next.After(now) {
			out = append(out, a)
			r.ids -= len(a.ids)
		} else {
			kept = append(kept, a)
		}
	}
	r.pending = kept
	return out
}

// again puts back an ack whose retry failed, to be tried after twice the last wait.
func (r *ackRetrier) again(a pendingAck) {
	a.wait = min(a.wait*2, ackRetryMax)
	a.next = time.Now().Add(a.wait)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, a)
	r.ids += len(a.ids)
}

// ackRetryLoop retries failed client_acks until ctx ends.
func (h *Hub) ackRetryLoop(ctx context.Context) {
	t := time.NewTicker(ackRetryFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, a := range h.acks.due(time.Now()) {
			actx, cancel := context.WithTimeout(ctx, ackRetryTimeout)
			pid := a.presenceID
			_, err := h.q.MarkDeliveredByMessage(actx, db.MarkDeliveredByMessageParams{MessageIds: a.ids, PresenceID: &pid})
			cancel()
			switch {
			case err == nil:
				h.log.Info("client_ack written on retry", "presence", pid, "messages", len(a.ids), "after", time.Since(a.since).Round(time.Millisecond).String())
			case time.Since(a.since) > ackRetryFor || ctx.Err() != nil:
				h.log.Warn("client_ack dropped after retries (its messages come again)", "presence", pid, "messages", len(a.ids), "err", err)
			default:
				h.acks.again(a)
			}
		}
	}
}
