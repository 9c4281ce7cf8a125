// Package health answers the two questions an orchestrator asks: is the process alive and is
// its database reachable (/health), and should it receive traffic (/health/ready).
//
// Liveness never depends on the database: a broker whose Postgres is down keeps serving
// /health with db:"down" so it is not restarted in a loop while the database recovers.
// Readiness fails while draining, while the database does not answer, while the applied
// schema is older than EXPECTED_MIGRATION, and while any registered dependency check fails.
//
// A Checker is safe for concurrent use.
package health

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Readiness reasons, stable strings clients and runbooks match on.
const (
	ReasonDraining         = "draining"
	ReasonDBDown           = "db_down"
	ReasonMigrationMissing = "migration_missing"
	ReasonCheckError       = "readiness_check_error"
)

// pingTimeout bounds one database probe; pingCacheFor lets a burst of probes share one ping.
const (
	pingTimeout  = 2 * time.Second
	pingCacheFor = 250 * time.Millisecond
)

// VersionReader reports the applied schema version (migrate.Migrator implements it).
type VersionReader interface {
	Version(ctx context.Context) (int64, error)
}

// Check is an extra readiness condition: it returns nil when satisfied.
type Check struct {
	Reason string // reported when Fn fails, e.g. "listener_down"
	Fn     func(ctx context.Context) error
}

// Checker tracks database health, draining and readiness.
type Checker struct {
	pool     *pgxpool.Pool
	versions VersionReader
	expected int64
	gauge    prometheus.Gauge
	started  time.Time

	draining atomic.Bool

	mu       sync.Mutex // guards the fields below and serialises pings
	lastPing time.Time
	lastUp   bool
	checks   []Check
}

// NewChecker builds a Checker. expected is EXPECTED_MIGRATION (0 = no pin); gauge is
// broker_db_healthy.
func NewChecker(pool *pgxpool.Pool, versions VersionReader, expected int64, gauge prometheus.Gauge) *Checker {
	return &Checker{pool: pool, versions: versions, expected: expected, gauge: gauge, started: time.Now()}
}

// AddCheck registers an extra readiness condition.
func (c *Checker) AddCheck(ch Check) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks = append(c.checks, ch)
}

// SetDraining makes readiness fail with "draining" from now on.
func (c *Checker) SetDraining() { c.draining.Store(true) }

// Draining reports whether SetDraining was called.
func (c *Checker) Draining() bool { return c.draining.Load() }

// Uptime is the time since the Checker was built (process start, near enough).
func (c *Checker) Uptime() time.Duration { return time.Since(c.started) }

// DBUp pings the database (at most once per 250 ms across callers) and reports whether it
// answered within 2 s.
func (c *Checker) DBUp(ctx context.Context) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.lastPing) < pingCacheFor {
		return c.lastUp
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	err := c.pool.Ping(pctx)
	cancel()
	if err != nil && c.lastUp {
		// Pooled connections to a server that went away are all dead; drop them so the
		// first probe after it returns dials afresh instead of failing on a stale socket.
		c.pool.Reset()
	}
	c.lastPing, c.lastUp = time.Now(), err == nil
	if c.gauge != nil {
		if c.lastUp {
			c.gauge.Set(1)
		} else {
			c.gauge.Set(0)
		}
	}
	return c.lastUp
}

// Readiness is the outcome of one readiness evaluation.
type Readiness struct {
	Ready     bool
	Reason    string // empty when ready
	Migration int64  // applied goose version (0 if unknown)
	Expected  int64  // EXPECTED_MIGRATION, 0 when unset
	Detail    string // error text for readiness_check_error and extra checks
}

// Ready evaluates readiness: draining, then the database, then the migration pin, then the
// registered checks.
func (c *Checker) Ready(ctx context.Context) Readiness {
	r := Readiness{Expected: c.expected}
	if c.Draining() {
		r.Reason = ReasonDraining
		return r
	}
	if !c.DBUp(ctx) {
		r.Reason = ReasonDBDown
		return r
	}
	vctx, cancel := context.WithTimeout(ctx, pingTimeout)
	v, err := c.versions.Version(vctx)
	cancel()
	if err != nil {
		r.Reason, r.Detail = ReasonCheckError, err.Error()
		return r
	}
	r.Migration = v
	if c.expected > 0 && v < c.expected {
		r.Reason = ReasonMigrationMissing
		return r
	}
	c.mu.Lock()
	checks := append([]Check(nil), c.checks...)
	c.mu.Unlock()
	for _, ch := range checks {
		if err := ch.Fn(ctx); err != nil {
			r.Reason, r.Detail = ch.Reason, err.Error()
			return r
		}
	}
	r.Ready = true
	return r
}

// Run keeps broker_db_healthy current between probes: every 5 s while the database is up,
// and with backoff from 500 ms (capped at 5 s) while it is down. It returns when ctx ends.
func (c *Checker) Run(ctx context.Context) {
	failures := 0
	for {
		wait := 5 * time.Second
		if !c.DBUp(ctx) {
			wait = min(5*time.Second, 500*time.Millisecond<<min(failures, 4))
			failures++
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
