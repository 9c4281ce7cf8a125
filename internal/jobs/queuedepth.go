package jobs

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshbroker/meshbroker/db"
)

// QueueDepthPeriod is how often broker_queue_depth is refreshed (the original's 30 s).
const QueueDepthPeriod = 30 * time.Second

// RunQueueDepth keeps gauge (broker_queue_depth) at the number of undelivered, unexpired
// deliveries until ctx ends. It is read-only, so every instance runs it without a lock.
func RunQueueDepth(ctx context.Context, q *db.Queries, gauge prometheus.Gauge, log *slog.Logger) {
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := q.CountPendingDeliveries(qctx)
		cancel()
		if err == nil {
			gauge.Set(float64(n))
		} else if ctx.Err() == nil {
			log.Debug("queue depth unavailable", "err", err)
		}
		if !Sleep(ctx, Jitter(QueueDepthPeriod)) {
			return
		}
	}
}

// Jitter spreads a period by ±10 % so instances started together do not query in lockstep.
func Jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

// Sleep waits d or until ctx ends; it reports whether the caller should go on.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
