package session

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/jobs"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// Maintenance runs every Config.HeartbeatEvery on every instance; each step is a
// conditional UPDATE, so instances racing on the same rows settle each row once.

// InstanceInfo describes this process in the instances table.
type InstanceInfo struct{ Hostname, Version, GitSHA string }

// Maintain registers this instance (retrying while the database is unavailable), keeps its
// heartbeat, moves presences of dead instances into their grace window, and ends presences
// whose grace window ran out (announcing peer_left).
func (h *Hub) Maintain(ctx context.Context, grace time.Duration, info InstanceInfo) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !h.registered.Load() {
			err := h.q.RegisterInstance(ctx, db.RegisterInstanceParams{ID: h.cfg.InstanceID, Hostname: info.Hostname, Version: info.Version, GitSha: info.GitSHA})
			if err != nil {
				if ctx.Err() == nil {
					h.log.Warn("register instance", "err", err)
				}
				t.Reset(time.Second)
				continue
			}
			h.registered.Store(true)
		}
		silent, err := h.q.HeartbeatInstance(ctx, h.cfg.InstanceID)
		switch {
		case errors.Is(err, pgx.ErrNoRows): // stopped (draining): no more beats
		case err != nil:
			if ctx.Err() == nil {
				h.log.Warn("instance heartbeat", "err", err)
			}
		case silent > (h.cfg.DeadAfter - h.cfg.HeartbeatEvery).Seconds():
			// A beat this late may have let the others declare this instance dead and move
			// its sessions into their grace window while their sockets stayed open here: take
			// them back before the window ends them.
			h.reattachPresences(ctx)
		}
		if _, err := h.q.DisconnectPresencesOfDeadInstances(ctx, h.cfg.DeadAfter.Seconds()); err != nil && ctx.Err() == nil {
			h.log.Warn("disconnect presences of dead instances", "err", err)
		}
		rows, err := h.q.ExpiredGracePresences(ctx, grace.Seconds())
		if err != nil && ctx.Err() == nil {
			h.log.Warn("expired grace presences", "err", err)
		}
		for _, r := range rows {
			reason := "grace_expired"
			if r.Revoked {
				reason = "revoked"
			}
			if err := h.endPresence(ctx, r.ID, r.ConnectionEpoch, reason); err != nil && ctx.Err() == nil {
				h.log.Warn("end presence after grace", "presence", r.ID, "err", err)
			}
		}
		h.releaseMemory()
		t.Reset(jobs.Jitter(h.cfg.HeartbeatEvery))
	}
}

// reattachPresences gives this instance back the presences of its live sockets that another
// instance moved into their grace window while this one could not heartbeat.
func (h *Hub) reattachPresences(ctx context.Context) {
	h.mu.Lock()
	ids := make([]string, 0, len(h.byPresence))
	epochs := make([]int64, 0, len(h.byPresence))
	for id, s := range h.byPresence {
		ids, epochs = append(ids, id), append(epochs, s.epoch)
	}
	h.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	n, err := h.q.ReattachPresences(ctx, db.ReattachPresencesParams{InstanceID: h.cfg.InstanceID, Ids: ids, Epochs: epochs})
	if err != nil {
		h.log.Warn("reattach presences after a late heartbeat", "err", err)
		return
	}
	if n > 0 {
		h.log.Warn("took back presences moved to their grace window while this instance's heartbeat was late", "presences", n)
	}
}

// StopInstance marks this instance stopped.
func (h *Hub) StopInstance(ctx context.Context) error { return h.q.StopInstance(ctx, h.cfg.InstanceID) }

// Registered reports whether this instance is recorded in the database (sockets are
// refused until it is).
func (h *Hub) Registered() bool { return h.registered.Load() }

// Job lock keys: pg_try_advisory_xact_lock ids, so each job runs on one instance per period.
var (
	lockStatusSweep = jobLockKey("status_ttl_sweep")
	lockPurge       = jobLockKey("purge")
)

func jobLockKey(name string) int64 {
	var h uint64 = 1469598103934665603 // FNV-1a
	for _, c := range []byte("meshbroker:job:" + name) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return int64(h & 0x7fffffffffffffff)
}

// StatusSweepPeriod is how often the working -> idle TTL sweep runs (across the fleet).
const StatusSweepPeriod = 15 * time.Second

func (h *Hub) sweepPeriod() time.Duration {
	if h.cfg.SweepPeriod > 0 {
		return h.cfg.SweepPeriod
	}
	return StatusSweepPeriod
}

// SweepStatuses runs the status TTL sweep every 15 s: presences working for longer than
// STATUS_TTL_SECONDS become idle, and are woken so messages held for them flow. Only the
// instance that takes the job's advisory lock runs a given round.
func (h *Hub) SweepStatuses(ctx context.Context) {
	for {
		if !jobs.Sleep(ctx, jobs.Jitter(h.sweepPeriod())) {
			return
		}
		if _, err := h.SweepStatusesOnce(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("status sweep", "err", err)
		}
	}
}

// SweepStatusesOnce runs one round; ran is false when another instance holds the lock.
func (h *Hub) SweepStatusesOnce(ctx context.Context) (ran bool, err error) {
	var flipped []string
	err = pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		got, err := q.TryJobLock(ctx, lockStatusSweep)
		if err != nil || !got {
			return err
		}
		// The lock excludes overlapping runs; the period claim makes it one run per period
		// across the fleet, however the instances' tickers are phased.
		if _, err := q.ClaimJobPeriod(ctx, db.ClaimJobPeriodParams{Name: "status_ttl_sweep", PeriodSeconds: h.sweepPeriod().Seconds() * 0.9}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}
		ran = true
		flipped, err = q.SweepWorkingToIdle(ctx, h.cfg.StatusTTL.Seconds())
		if err != nil {
			return err
		}
		for _, p := range notifier.WakePayloads(flipped, nil) {
			if err := q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: p}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && ran {
		h.metrics.TTLSweeps.WithLabelValues(metrics.TTLSweepBucket(int64(len(flipped)))).Inc()
		h.metrics.TTLSweepFlipped.Add(float64(len(flipped)))
	}
	return ran, err
}

// Purge deletes what has expired, once a minute across the fleet (see PurgeOnce).
func (h *Hub) Purge(ctx context.Context) {
	for {
		if !jobs.Sleep(ctx, jobs.Jitter(time.Minute)) {
			return
		}
		if err := h.PurgeOnce(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("purge", "err", err)
		}
	}
}

// PurgeOnce runs one purge unless another instance's is running: messages past QUEUE_TTL
// (with their deliveries), hook signals older than 10 s, hello signatures past the replay
// window, idle rate buckets, and presences ended longer ago than PRESENCE_RETENTION; and it
// reroutes copies stored for presences that were ending at that moment. Each step deletes at
// most a batch; whatever is left goes in the next minute's run.
func (h *Hub) PurgeOnce(ctx context.Context) error {
	return pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		got, err := q.TryJobLock(ctx, lockPurge)
		if err != nil || !got {
			return err
		}
		steps := []func(context.Context) (int64, error){
			q.PurgeExpiredMessages, q.PurgePendingStatuses, q.PurgeHelloReplays, q.PurgeRateBuckets,
			q.RerouteEndedPresenceDeliveries,
		}
		if h.cfg.PresenceRetention > 0 {
			steps = append(steps, func(ctx context.Context) (int64, error) {
				return q.PurgeEndedPresences(ctx, h.cfg.PresenceRetention.Seconds())
			})
		}
		for _, step := range steps {
			if _, err := step(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}

// releaseMemory hands freed heap back to the OS after many sockets closed (a deploy's
// reconnect storm moving peers elsewhere, a client fleet going away): Go's background
// scavenger would return it only over minutes, and an instance's RSS should follow its
// load down. Called from the maintenance loop only.
func (h *Hub) releaseMemory() {
	n := h.Count()
	if n > h.peakSockets {
		h.peakSockets = n
	}
	if h.peakSockets >= 1000 && n < h.peakSockets/2 {
		debug.FreeOSMemory()
		h.peakSockets = n
	}
}
