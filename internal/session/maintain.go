package session

import (
	"context"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/jobs"
)

// Maintenance periods. Every instance runs them; each step is a conditional UPDATE, so
// instances racing on the same rows settle each row once.
const (
	heartbeatEvery = 5 * time.Second
	deadAfter      = 30 * time.Second
	graceScanEvery = 5 * time.Second
)

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
		if err := h.q.HeartbeatInstance(ctx, h.cfg.InstanceID); err != nil && ctx.Err() == nil {
			h.log.Warn("instance heartbeat", "err", err)
		}
		if _, err := h.q.DisconnectPresencesOfDeadInstances(ctx, deadAfter.Seconds()); err != nil && ctx.Err() == nil {
			h.log.Warn("disconnect presences of dead instances", "err", err)
		}
		rows, err := h.q.ExpiredGracePresences(ctx, grace.Seconds())
		if err != nil && ctx.Err() == nil {
			h.log.Warn("expired grace presences", "err", err)
		}
		for _, r := range rows {
			if err := h.endPresence(ctx, r.ID, r.ConnectionEpoch, "grace_expired"); err != nil && ctx.Err() == nil {
				h.log.Warn("end presence after grace", "presence", r.ID, "err", err)
			}
		}
		t.Reset(jobs.Jitter(graceScanEvery))
	}
}

// StopInstance marks this instance stopped.
func (h *Hub) StopInstance(ctx context.Context) error { return h.q.StopInstance(ctx, h.cfg.InstanceID) }

// Registered reports whether this instance is recorded in the database (sockets are
// refused until it is).
func (h *Hub) Registered() bool { return h.registered.Load() }
