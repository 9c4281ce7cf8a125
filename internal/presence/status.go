package presence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
)

// The statuses a client or a hook may set on a presence.
const (
	Idle    = "idle"
	Working = "working"
	DND     = "dnd"
)

// Settable reports whether status is one a client or a hook may set (idle, working, dnd).
func Settable(status string) bool {
	switch status {
	case Idle, Working, DND:
		return true
	}
	return false
}

// WriteStatus applies the status rules to a live presence, atomically: a different status
// always wins; the same status keeps or upgrades its source by rank (hook > manual > jsonl);
// a lower-ranked source only bumps the time while the recorded source is fresher than fresh,
// else takes over (the WriteStatus query). becameIdle reports a change to idle, for which
// the caller wakes the presence so messages held by priority gating flow. A presence that
// ended meanwhile is no error.
func WriteStatus(ctx context.Context, q *db.Queries, id, status, source string, fresh time.Duration) (becameIdle bool, err error) {
	r, err := q.WriteStatus(ctx, db.WriteStatusParams{ID: id, Status: status, Source: source, FreshSeconds: fresh.Seconds()})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // the presence ended meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("write status: %w", err)
	}
	return r.Status == Idle && r.OldStatus != Idle, nil
}

// The sources a status is written from, by rank (WriteStatus): a hook outranks a manual
// set_status.
const (
	SourceHook   = "hook"
	SourceManual = "manual"
)
