// Package app wires the broker together and owns its lifecycle: the start order (database,
// migrations, metrics, HTTP) and the drain sequence on SIGINT/SIGTERM (readiness fails,
// the listener closes, in-flight requests finish, the pool closes, the embedded cluster stops).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/buildinfo"
	"github.com/meshbroker/meshbroker/internal/config"
	"github.com/meshbroker/meshbroker/internal/connlimit"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/devdb"
	"github.com/meshbroker/meshbroker/internal/health"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/jobs"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/migrate"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/server"
	"github.com/meshbroker/meshbroker/internal/session"
)

// Database is an open connection to the broker's Postgres, embedded or not.
type Database struct {
	URL     string
	cluster *devdb.Cluster // nil unless embedded
}

// OpenDatabase returns DATABASE_URL, or starts (or attaches to) the embedded cluster in
// BROKER_DATA_DIR when DATABASE_URL is unset.
func OpenDatabase(ctx context.Context, cfg config.Config, log *slog.Logger) (*Database, error) {
	if !cfg.Embedded() {
		return &Database{URL: cfg.DatabaseURL}, nil
	}
	cluster, err := devdb.Start(ctx, devdb.Options{DataDir: cfg.DataDir, Logger: log.With("subsystem", "devdb")})
	if err != nil {
		return nil, fmt.Errorf("embedded database (no DATABASE_URL set): %w", err)
	}
	return &Database{URL: cluster.URL(), cluster: cluster}, nil
}

// Close stops the embedded cluster if this process started it.
func (d *Database) Close(ctx context.Context) error {
	if d.cluster == nil {
		return nil
	}
	return d.cluster.Stop(ctx)
}

// NewPool opens a pgx pool tagged with the broker's application_name.
func NewPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "meshbroker"
	}
	// pgxpool's default (max(4, NumCPU)) starves concurrent sends and claims; a URL's
	// pool_max_conns still wins.
	if !strings.Contains(url, "pool_max_conns") {
		pc.MaxConns = 32
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	return pool, nil
}

// Serve runs the broker until ctx is cancelled (the caller cancels it on SIGINT/SIGTERM),
// then drains within cfg.DrainTimeout. ready, if non-nil, receives the listening address.
func Serve(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr net.Addr)) (err error) {
	dbase, err := OpenDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), max(cfg.DrainTimeout/4, 5*time.Second))
		defer cancel()
		if cerr := dbase.Close(sctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stop embedded database: %w", cerr))
		}
	}()

	pool, err := NewPool(ctx, dbase.URL)
	if err != nil {
		return err
	}
	defer pool.Close()

	migrator, err := migrate.FromPool(pool, log)
	if err != nil {
		return err
	}
	defer migrator.Close()
	if cfg.Embedded() || cfg.AutoMigrate {
		res, err := migrator.Up(ctx)
		if err != nil {
			return err
		}
		v, _ := migrator.Version(ctx)
		log.Info("migrations applied", "applied_now", len(res), "version", v)
	}

	m := metrics.New()
	m.RegisterPool(pool)
	checker := health.NewChecker(pool, migrator, cfg.ExpectedMigration, m.DBHealthy)

	router := delivery.NewRouter(pool, cfg.QueueTTL)
	defer router.Close()
	router.OnGrantDrop = func(cap string) { m.MessagesDroppedByGrant.WithLabelValues(cap).Inc() }
	chainer := audit.NewChainer(pool, log.With("subsystem", "audit"))
	router.OnAudited = chainer.Note
	router.OnBatch = func(n int, took time.Duration) {
		m.SendBatchSize.Observe(float64(n))
		m.SendBatchDuration.Observe(took.Seconds())
	}
	// Sockets are capped below the open-file limit, so a flood of them can never take the
	// descriptors the database pool and the LISTEN connection need.
	softFiles, hardFiles, err := connlimit.RaiseOpenFileLimit()
	if err != nil {
		return fmt.Errorf("read the open-file limit: %w", err)
	}
	connBudget := connlimit.Budget(softFiles)
	maxSockets := min(cfg.MaxConnectionsPerInstance, max(1, connBudget-connlimit.Reserve/2))
	log.Info("open-file limit", "soft", softFiles, "hard", hardFiles, "connection_budget", connBudget,
		"max_sockets", maxSockets, "MAX_CONNECTIONS_PER_INSTANCE", cfg.MaxConnectionsPerInstance)
	if maxSockets < cfg.MaxConnectionsPerInstance {
		log.Warn("MAX_CONNECTIONS_PER_INSTANCE lowered to fit the open-file limit (raise the hard limit: ulimit -Hn)",
			"configured", cfg.MaxConnectionsPerInstance, "effective", maxSockets)
	}
	instanceID := ids.New()
	hub := session.NewHub(session.Config{
		InstanceID: instanceID, MaxMessageBytes: cfg.MaxMessageBytes, MaxPresencesPerMesh: cfg.MaxConnectionsPerMesh,
		MaxSessionsPerMember: cfg.MaxSessionsPerMember, MaxNewSessionsPerMinute: cfg.MaxNewSessionsPerMemberPerMin,
		MaxSockets: maxSockets, MaxPreauthPerIP: cfg.MaxPreauthPerIP, TrustProxyHeaders: cfg.TrustProxyHeaders,
		HandshakeTimeout: cfg.HandshakeTimeout, HookLegacyUnauthenticated: cfg.HookLegacyUnauthenticated,
		RequireSessionProof: cfg.RequireSessionProof, AllowedOrigins: cfg.AllowedOrigins,
		SendRateBurst: cfg.SendRateBurst, SendRatePerMinute: cfg.SendRatePerMinute,
		HookFreshWindow: cfg.HookFreshWindow, HookRatePerMinute: cfg.HookRateLimitPerMin,
		HookIPRatePerMinute: cfg.HookIPRateLimitPerMin, HelloIPRatePerMinute: cfg.HelloIPRateLimitPerMin,
	}, pool, router, m, log.With("subsystem", "session"))
	// The instance's periodic jobs: heartbeat and registration, dead instances, grace expiry
	// (ending presences through the hub), the status TTL sweep and the purge.
	jobRunner := jobs.New(jobs.Config{
		InstanceID: instanceID, StatusTTL: cfg.StatusTTL, PresenceRetention: cfg.PresenceRetention,
		HeartbeatEvery: cfg.InstanceHeartbeat, DeadAfter: cfg.InstanceDeadAfter,
	}, pool, hub, m, log.With("subsystem", "session")) // the subsystem its log lines always had
	listener := notifier.NewListener(dbase.URL, hub, log.With("subsystem", "notifier"))
	checker.AddCheck(health.Check{Reason: "listener_down", Fn: func(context.Context) error {
		if !listener.Connected() {
			return errors.New("the LISTEN connection is not established")
		}
		return nil
	}})
	checker.AddCheck(health.Check{Reason: "instance_unregistered", Fn: func(context.Context) error {
		if !hub.Registered() {
			return errors.New("this instance is not yet recorded in the database")
		}
		return nil
	}})
	hostname, _ := os.Hostname()

	accounts := api.New(api.Deps{Sessions: hub, Pool: pool, Metrics: m, Log: log.With("subsystem", "api"), Config: api.Config{
		MaxBodyBytes: int64(cfg.MaxMessageBytes), LegacyAuth: cfg.LegacyAuth, AppSecret: cfg.AppSecret,
		CLISyncSecret: cfg.CLISyncSecret, InviteV2Enabled: cfg.InviteV2Enabled, BrokerURL: cfg.BrokerURL,
		PublicURL: cfg.PublicURL, AppURL: cfg.AppURL, TrustProxyHeaders: cfg.TrustProxyHeaders,
		IPRatePerMinute: cfg.APIIPRateLimitPerMin,
	}})
	srv := server.New(server.Deps{
		Checker: checker, Metrics: m, Logger: log,
		Version: buildinfo.Version, GitSHA: buildinfo.GitSHA(), WS: hub, Hook: hub.HookHandler(),
		API: accounts, APIPrefixes: api.Prefixes,
	})

	tcpLn, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on BROKER_PORT=%d: %w", cfg.Port, err)
	}
	// Plain HTTP connections per peer IP: only where the peer is the client (behind a proxy,
	// TRUST_PROXY_HEADERS=1, every connection comes from the proxy).
	httpPerIP := cfg.MaxHTTPConnsPerIP
	if cfg.TrustProxyHeaders {
		httpPerIP = 0
	}
	ln := connlimit.Wrap(tcpLn, connBudget, httpPerIP, func(reason string) { m.ConnectionsRejected.WithLabelValues(reason).Inc() })
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		ConnState:         ln.ConnState,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	var metricsSrv *http.Server
	if cfg.MetricsPort != 0 {
		mln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.MetricsPort)))
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on METRICS_PORT=%d: %w", cfg.MetricsPort, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metricsSrv.Serve(mln) }()
		defer metricsSrv.Close()
	}

	if cfg.PprofAddr != "" {
		pln, err := net.Listen("tcp", cfg.PprofAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on PPROF_ADDR=%s: %w", cfg.PprofAddr, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = psrv.Serve(pln) }()
		defer psrv.Close()
	}

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go checker.Run(bg)
	go accounts.Run(bg.Done())
	go jobs.RunQueueDepth(bg, db.New(pool), m.QueueDepth, log)
	go listener.Run(bg)
	hubDone := make(chan struct{})
	go func() { hub.Run(bg); close(hubDone) }()
	// Audit events are linked into their chains every 100 ms for meshes that just sent
	// (the chain trails the messages by a blink, and the send path never waits on the chain
	// lock), and every 2 s for whatever else is pending.
	go chainer.Run(bg, 100*time.Millisecond, 2*time.Second)
	go jobRunner.SweepStatuses(bg)
	go jobRunner.Purge(bg)
	go jobRunner.Maintain(bg, cfg.PresenceGrace, jobs.InstanceInfo{Hostname: hostname, Version: buildinfo.Version, GitSHA: buildinfo.GitSHA()})

	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	log.Info("broker listening", "addr", ln.Addr().String(), "version", buildinfo.Version,
		"git_sha", buildinfo.GitSHA(), "embedded_db", cfg.Embedded())
	if ready != nil {
		ready(ln.Addr())
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	err = drain(cfg, log, checker, httpSrv, hub, jobRunner)
	// The hub's last delivered marks are flushed before the pool (and the embedded cluster)
	// close; a mark lost here would only mean a redelivery, but there is no need for one.
	stopBG()
	select {
	case <-hubDone:
	case <-time.After(5 * time.Second):
		log.Warn("hub did not stop within 5 s")
	}
	return err
}

// drain is the shutdown sequence: fail readiness so the proxy routes new work elsewhere,
// stop accepting, and let in-flight requests finish, all within DRAIN_TIMEOUT (three
// quarters of it for HTTP; the rest is for closing the pool and the embedded cluster).
func drain(cfg config.Config, log *slog.Logger, checker *health.Checker, httpSrv *http.Server, hub *session.Hub, jobRunner *jobs.Runner) error {
	start := time.Now()
	checker.SetDraining()
	log.Info("draining", "drain_timeout", cfg.DrainTimeout.String(), "sockets", hub.Count())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout*3/4)
	defer cancel()
	// Peers are told to reconnect (1001); their presences keep the grace window, so a
	// reconnect to another instance is silent and receives what was queued meanwhile.
	hub.CloseAll()
	if err := httpSrv.Shutdown(ctx); err != nil {
		log.Warn("drain deadline reached; closing remaining connections", "err", err)
		_ = httpSrv.Close()
	}
	for hub.Count() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	// Each closed socket writes its presence into the grace window: before the pool closes.
	if err := hub.WaitFinished(ctx); err != nil {
		log.Warn("drain", "err", err)
	}
	if err := jobRunner.StopInstance(context.WithoutCancel(ctx)); err != nil {
		log.Warn("mark instance stopped", "err", err)
	}
	log.Info("drained", "took_ms", time.Since(start).Milliseconds())
	return nil
}
