package jobs

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// Maintenance runs every Config.HeartbeatEvery on every instance; each step is a
// conditional UPDATE, so instances racing on the same rows settle each row once.

// Presences is what the jobs ask of this instance's live sessions (session.Hub implements
// it): the jobs hold no sockets, and this is how they act on the ones the instance holds.
type Presences interface {
	// EndPresence ends a presence if epoch still owns it: peer state saved, its deliveries
	// rerouted to its member, peer_left announced and audited.
	EndPresence(ctx context.Context, id string, epoch int64, reason string) error
	// HeldPresences lists the presences whose sockets this instance holds, with their epochs.
	HeldPresences() (ids []string, epochs []int64)
	// SetRegistered tells the instance its row exists in instances (sockets are refused
	// until it does).
	SetRegistered()
	// Count returns the number of sockets held.
	Count() int
}

// Config is what the jobs need from the broker configuration.
type Config struct {
	InstanceID        string
	StatusTTL         time.Duration
	SweepPeriod       time.Duration // status TTL sweep period; 0 = StatusSweepPeriod
	PresenceRetention time.Duration // ended presences older than this are purged; 0 = never
	HeartbeatEvery    time.Duration // instance heartbeat and maintenance scans; 0 = 2 s
	DeadAfter         time.Duration // an instance silent this long is dead; 0 = 7 s
}

// Runner runs one instance's periodic jobs. Each of Maintain, SweepStatuses and Purge is
// one goroutine; the Once variants may be called from anywhere.
type Runner struct {
	cfg       Config
	pool      *pgxpool.Pool
	q         *db.Queries
	presences Presences
	metrics   *metrics.Metrics
	log       *slog.Logger

	peakSockets int // the most sockets held since memory was last released; Maintain's only
}

// New builds the jobs of one instance. presences may be nil for a Runner that runs only the
// status sweep and the purge.
func New(cfg Config, pool *pgxpool.Pool, presences Presences, m *metrics.Metrics, log *slog.Logger) *Runner {
	if cfg.HeartbeatEvery == 0 {
		cfg.HeartbeatEvery = 2 * time.Second
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 7 * time.Second
	}
	return &Runner{cfg: cfg, pool: pool, q: db.New(pool), presences: presences, metrics: m, log: log}
}

// InstanceInfo describes this process in the instances table.
type InstanceInfo struct{ Hostname, Version, GitSHA string }

// Maintain registers this instance (retrying while the database is unavailable), keeps its
// heartbeat, moves presences of dead instances into their grace window, and ends presences
// whose grace window ran out (announcing peer_left).
func (r *Runner) Maintain(ctx context.Context, grace time.Duration, info InstanceInfo) {
	t := time.NewTimer(0)
	defer t.Stop()
	registered := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !registered {
			err := r.q.RegisterInstance(ctx, db.RegisterInstanceParams{ID: r.cfg.InstanceID, Hostname: info.Hostname, Version: info.Version, GitSha: info.GitSHA})
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("register instance", "err", err)
				}
				t.Reset(time.Second)
				continue
			}
			registered = true
			r.presences.SetRegistered()
		}
		silent, err := r.q.HeartbeatInstance(ctx, r.cfg.InstanceID)
		switch {
		case errors.Is(err, pgx.ErrNoRows): // stopped (draining): no more beats
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("instance heartbeat", "err", err)
			}
		case silent > (r.cfg.DeadAfter - r.cfg.HeartbeatEvery).Seconds():
			// A beat this late may have let the others declare this instance dead and move
			// its sessions into their grace window while their sockets stayed open here: take
			// them back before the window ends them.
			r.reattachPresences(ctx)
		}
		if _, err := r.q.DisconnectPresencesOfDeadInstances(ctx, r.cfg.DeadAfter.Seconds()); err != nil && ctx.Err() == nil {
			r.log.Warn("disconnect presences of dead instances", "err", err)
		}
		rows, err := r.q.ExpiredGracePresences(ctx, grace.Seconds())
		if err != nil && ctx.Err() == nil {
			r.log.Warn("expired grace presences", "err", err)
		}
		for _, row := range rows {
			reason := "grace_expired"
			if row.Revoked {
				reason = "revoked"
			}
			if err := r.presences.EndPresence(ctx, row.ID, row.ConnectionEpoch, reason); err != nil && ctx.Err() == nil {
				r.log.Warn("end presence after grace", "presence", row.ID, "err", err)
			}
		}
		r.releaseMemory()
		t.Reset(Jitter(r.cfg.HeartbeatEvery))
	}
}

// reattachPresences gives this instance back the presences of its live sockets that another
// instance moved into their grace window while this one could not heartbeat.
func (r *Runner) reattachPresences(ctx context.Context) {
	ids, epochs := r.presences.HeldPresences()
	if len(ids) == 0 {
		return
	}
	n, err := r.q.ReattachPresences(ctx, db.ReattachPresencesParams{InstanceID: r.cfg.InstanceID, Ids: ids, Epochs: epochs})
	if err != nil {
		r.log.Warn("reattach presences after a late heartbeat", "err", err)
		return
	}
	if n > 0 {
		r.log.Warn("took back presences moved to their grace window while this instance's heartbeat was late", "presences", n)
	}
}

// StopInstance marks this instance stopped.
func (r *Runner) StopInstance(ctx context.Context) error {
	return r.q.StopInstance(ctx, r.cfg.InstanceID)
}

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

func (r *Runner) sweepPeriod() time.Duration {
	if r.cfg.SweepPeriod > 0 {
		return r.cfg.SweepPeriod
	}
	return StatusSweepPeriod
}

// SweepStatuses runs the status TTL sweep every 15 s: presences working for longer than
// STATUS_TTL_SECONDS become idle, and are woken so messages held for them flow. Only the
// instance that takes the job's advisory lock runs a given round.
func (r *Runner) SweepStatuses(ctx context.Context) {
	for {
		if !Sleep(ctx, Jitter(r.sweepPeriod())) {
			return
		}
		if _, err := r.SweepStatusesOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("status sweep", "err", err)
		}
	}
}

// SweepStatusesOnce runs one round; ran is false when another instance holds the lock.
func (r *Runner) SweepStatusesOnce(ctx context.Context) (ran bool, err error) {
	var flipped []string
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		got, err := q.TryJobLock(ctx, lockStatusSweep)
		if err != nil || !got {
			return err
		}
		// The lock excludes overlapping runs; the period claim makes it one run per period
		// across the fleet, however the instances' tickers are phased.
		if _, err := q.ClaimJobPeriod(ctx, db.ClaimJobPeriodParams{Name: "status_ttl_sweep", PeriodSeconds: r.sweepPeriod().Seconds() * 0.9}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}
		ran = true
		flipped, err = q.SweepWorkingToIdle(ctx, r.cfg.StatusTTL.Seconds())
		if err != nil {
			return err
		}
		for _, p := range notifier.WakePayloads(flipped, nil, nil) {
			if err := q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: p}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && ran {
		r.metrics.TTLSweeps.WithLabelValues(metrics.TTLSweepBucket(int64(len(flipped)))).Inc()
		r.metrics.TTLSweepFlipped.Add(float64(len(flipped)))
	}
	return ran, err
}

// Purge deletes what has expired, once a minute across the fleet (see PurgeOnce).
func (r *Runner) Purge(ctx context.Context) {
	for {
		if !Sleep(ctx, Jitter(time.Minute)) {
			return
		}
		if err := r.PurgeOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("purge", "err", err)
		}
	}
}

// PurgeOnce runs one purge unless another instance's is running: messages past QUEUE_TTL
// (with their deliveries), hook signals older than 10 s, hello signatures past the replay
// window, idle rate buckets, and presences ended longer ago than PRESENCE_RETENTION; and it
// reroutes copies stored for presences that were ending at that moment. Each step deletes at
// most a batch; whatever is left goes in the next minute's run.
func (r *Runner) PurgeOnce(ctx context.Context) error {
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		got, err := q.TryJobLock(ctx, lockPurge)
		if err != nil || !got {
			return err
		}
		steps := []func(context.Context) (int64, error){
			q.PurgeExpiredMessages, q.PurgePendingStatuses, q.PurgeHelloReplays, q.PurgeRateBuckets,
			q.RerouteEndedPresenceDeliveries,
		}
		if r.cfg.PresenceRetention > 0 {
			steps = append(steps, func(ctx context.Context) (int64, error) {
				return q.PurgeEndedPresences(ctx, r.cfg.PresenceRetention.Seconds())
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
func (r *Runner) releaseMemory() {
	n := r.presences.Count()
	if n > r.peakSockets {
		r.peakSockets = n
	}
	if r.peakSockets >= 1000 && n < r.peakSockets/2 {
		debug.FreeOSMemory()
		r.peakSockets = n
	}
}
