package session

import (
	"context"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// Notifications the hub publishes on its own (takeover kicks, wake-ups after a status
// change, system events such as peer_joined) go out in batches: one NotifyMany statement,
// one transaction, for every payload queued since the last one. Each notifying commit holds
// Postgres' cluster-wide notification lock through its WAL flush, so one commit per hello
// made every hello of a reconnect storm wait its turn for that lock; a batch pays it once.
// A notification waits at most for the batch in flight (a few milliseconds): they are hints,
// and the rows they announce are already committed.

// publishQueue bounds the notifications waiting to be published; when it is full, publish
// sends synchronously (slower, never dropped).
const (
	publishQueue    = 8192
	publishBatchMax = 512
)

// publish queues a notification (see above), logging failures (notifications are hints).
func (h *Hub) publish(ctx context.Context, payload string) {
	select {
	case h.outbox <- payload:
	default:
		h.publishNow(ctx, []string{payload})
	}
}

func (h *Hub) publishNow(ctx context.Context, payloads []string) {
	var err error
	if len(payloads) == 1 {
		err = h.q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: payloads[0]})
	} else {
		err = h.q.NotifyMany(ctx, db.NotifyManyParams{Channel: notifier.Channel, Payloads: payloads})
	}
	if err != nil {
		h.log.Warn("notify", "notifications", len(payloads), "err", err)
	}
}

// publishLoop sends the queued notifications in batches until ctx ends, then sends what is
// left.
func (h *Hub) publishLoop(ctx context.Context) {
	batch := make([]string, 0, publishBatchMax)
	take := func() {
		for len(batch) < publishBatchMax {
			select {
			case p := <-h.outbox:
				batch = append(batch, p)
			default:
				return
			}
		}
	}
	// A batch is sent whole even when ctx ends meanwhile (the drain's last peer_left
	// notifications come then): on a context of its own, bounded in time.
	send := func() {
		if len(batch) > 0 {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			h.publishNow(sctx, batch)
			cancel()
			batch = batch[:0]
		}
	}
	for {
		select {
		case <-ctx.Done():
			take()
			send()
			return
		case p := <-h.outbox:
			batch = append(batch, p)
			take()
			send()
		}
	}
}
