// Package metrics holds the broker's Prometheus series on a private registry: every
// broker_* series of the original (same names, labels and help text, so existing dashboards
// and alerts keep working), the Go runtime and process collectors, and the pgxpool pool.
//
// Labelled series are pre-registered with every label value they can take, so a dashboard
// shows zeros rather than gaps from the first scrape. All fields are safe for concurrent use.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values, pre-registered.
var (
	// ConnectionRejectReasons are the hello error codes (PROTOCOL.md §3), then the refusals
	// before a hello: the instance full (instance_full) or its descriptor budget spent
	// (fd_budget), a peer IP's share of plain HTTP connections held (http_conns_per_ip), an
	// idle connection closed to make room (idle_closed), too many sockets of one IP without hello (preauth_per_ip), no hello in
	// time (handshake_timeout), frames other than hello kept coming (no_hello), or the
	// client IP's hello budget was spent (rate_limit).
	ConnectionRejectReasons = []string{
		"bad_session_pubkey", "capacity", "timestamp_skew", "malformed", "bad_signature",
		"unauthorized", "bad_session_proof", "replayed",
		"instance_full", "fd_budget", "http_conns_per_ip", "idle_closed", "preauth_per_ip",
		"handshake_timeout", "no_hello", "rate_limit",
	}
	// MessageRejectReasons are the send rejections of PROTOCOL.md §4 plus undecodable frames.
	MessageRejectReasons = []string{"rate_limit", "too_large", "no_recipient", "parse_or_handler"}
	// RoutedPriorities label broker_messages_routed_total.
	RoutedPriorities = []string{"now", "next", "low", "stream"}
	// GrantCaps label broker_messages_dropped_by_grant_total.
	GrantCaps = []string{"dm", "broadcast"}
	// TTLSweepBuckets label broker_ttl_sweeps_total{flipped}. The original used the exact
	// count as the label value, an unbounded label set; we keep the label but bucket it.
	TTLSweepBuckets = []string{"0", "1", "2-10", "11-100", "101+"}
)

// Metrics is the broker's set of series.
type Metrics struct {
	Registry *prometheus.Registry

	ConnectionsTotal       prometheus.Counter
	ConnectionsRejected    *prometheus.CounterVec
	ConnectionsActive      prometheus.Gauge
	MessagesRouted         *prometheus.CounterVec
	MessagesRejected       *prometheus.CounterVec
	MessagesDroppedByGrant *prometheus.CounterVec
	LegacyAuthHits         prometheus.Counter
	QueueDepth             prometheus.Gauge
	TTLSweeps              *prometheus.CounterVec
	TTLSweepFlipped        prometheus.Counter
	HookRequests           prometheus.Counter
	HookRateLimited        prometheus.Counter
	DBHealthy              prometheus.Gauge

	SendToPush            prometheus.Histogram
	ClaimDuration         prometheus.Histogram
	NotificationsReceived *prometheus.CounterVec
	PollsWithWork         prometheus.Counter
	Redeliveries          prometheus.Counter
	LogCursorsMissed      prometheus.Counter
	Takeovers             prometheus.Counter
	SendBatchSize         prometheus.Histogram
	SendBatchDuration     prometheus.Histogram
	// APIRequests counts the account routes' answers by route ("POST /cli/mesh/create") and
	// status code.
	APIRequests *prometheus.CounterVec
}

// NotificationKinds label broker_notifications_received_total.
var NotificationKinds = []string{"wake", "kick", "revoke", "system", "kick_session", "mesh_archived"}

// latencyBuckets span 0.5 ms to 10 s: the targets are single-digit milliseconds, the
// original broker's p99 was seconds.
var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .015, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New builds the registry with every series registered.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := factory{r}
	m := &Metrics{
		Registry: r,

		ConnectionsTotal: f.counter("broker_connections_total", "Total WS connection attempts"),
		ConnectionsRejected: f.counterVec("broker_connections_rejected_total",
			"WS connections refused (auth failure, capacity, etc.)", "reason", ConnectionRejectReasons),
		ConnectionsActive: f.gauge("broker_connections_active", "Currently connected peers"),
		MessagesRouted: f.counterVec("broker_messages_routed_total",
			"Messages successfully queued + routed", "priority", RoutedPriorities),
		MessagesRejected: f.counterVec("broker_messages_rejected_total",
			"Messages rejected (size, auth, malformed)", "reason", MessageRejectReasons),
		MessagesDroppedByGrant: f.counterVec("broker_messages_dropped_by_grant_total",
			"Messages silently dropped because recipient didn't grant sender the required capability", "cap", GrantCaps),
		LegacyAuthHits: f.counter("broker_legacy_auth_hits_total",
			"Pre-alpha.36 clients authenticating via body.user_id fallback (remove shim when near zero)"),
		QueueDepth: f.gauge("broker_queue_depth", "Undelivered messages currently in the queue"),
		TTLSweeps: f.counterVec("broker_ttl_sweeps_total",
			"TTL sweeper runs completed", "flipped", TTLSweepBuckets),
		TTLSweepFlipped: f.counter("broker_ttl_sweep_flipped_total",
			"Presences flipped from working to idle by the status TTL sweep"),
		HookRequests: f.counter("broker_hook_requests_total", "POST /hook/set-status requests received"),
		HookRateLimited: f.counter("broker_hook_requests_rate_limited_total",
			"POST /hook/set-status rejected by rate limit"),
		DBHealthy: f.gauge("broker_db_healthy", "1 if Postgres connection is up, 0 if not"),

		SendToPush: f.histogram("broker_send_to_push_seconds",
			"Time from a message being stored to its push being written to a recipient socket"),
		ClaimDuration: f.histogram("broker_claim_duration_seconds",
			"Duration of one delivery claim (lease) query"),
		NotificationsReceived: f.counterVec("broker_notifications_received_total",
			"LISTEN/NOTIFY notifications received, by kind", "kind", NotificationKinds),
		PollsWithWork: f.counter("broker_polls_with_work_total",
			"Claims started by the periodic poll (not a notification) that found deliverable rows"),
		Redeliveries: f.counter("broker_redeliveries_total",
			"Pushes of rows claimed before (lease expired or socket lost before delivery)"),
		LogCursorsMissed: f.counter("broker_log_cursors_missed_total",
			"Presences told messages_missed: mesh log entries after their cursor were purged (QUEUE_TTL) or the log was recreated"),
		Takeovers: f.counter("broker_takeovers_total",
			"Hellos that took over a live presence (a reconnect or a duplicate session)"),
		SendBatchSize: f.histogramBuckets("broker_send_batch_size",
			"Sends stored per write transaction", []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}),
		SendBatchDuration: f.histogram("broker_send_batch_seconds",
			"Duration of one write transaction storing a batch of sends"),
	}
	m.APIRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "broker_api_requests_total",
		Help: "Requests to the account routes (/cli, /cli-sync, /join, /invites, /mesh), by route and HTTP status"}, []string{"route", "code"})
	r.MustRegister(
		m.APIRequests,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// TTLSweepBucket maps a flipped count to its broker_ttl_sweeps_total label value.
func TTLSweepBucket(flipped int64) string {
	switch {
	case flipped <= 0:
		return "0"
	case flipped == 1:
		return "1"
	case flipped <= 10:
		return "2-10"
	case flipped <= 100:
		return "11-100"
	default:
		return "101+"
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

type factory struct{ r *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.r.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string) prometheus.Histogram {
	return f.histogramBuckets(name, help, latencyBuckets)
}

func (f factory) histogramBuckets(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.r.MustRegister(h)
	return h
}

func (f factory) counterVec(name, help, label string, values []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	for _, v := range values {
		c.WithLabelValues(v)
	}
	f.r.MustRegister(c)
	return c
}
