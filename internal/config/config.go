// Package config turns the process environment into a validated Config. Every variable the
// broker reads is declared here once, with its default and meaning; docs/configuration in
// the README is the same table. An invalid value is an error naming the variable and what it
// expects, and the process exits non-zero rather than run with a guess.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is the broker's configuration. Field comments name the environment variable.
type Config struct {
	// BROKER_PORT: the one TCP port serving HTTP and the WebSocket upgrade.
	Port int
	// METRICS_PORT: an extra listener serving only /metrics (Fly's [metrics] scrape port);
	// 0 = none. /metrics is served on BROKER_PORT either way.
	MetricsPort int
	// DATABASE_URL: Postgres connection URL. Empty selects the embedded default: a local
	// cluster in DataDir, started and stopped by the broker.
	DatabaseURL string
	// BROKER_DATA_DIR: where the embedded cluster keeps its data.
	DataDir string
	// AUTO_MIGRATE: migrate on `serve` even with DATABASE_URL set (the embedded database is
	// always migrated). Real deployments run `broker migrate up` as a release step instead.
	AutoMigrate bool
	// EXPECTED_MIGRATION: /health/ready fails with migration_missing until the applied goose
	// version is at least this. 0 = no pin.
	ExpectedMigration int64
	// DRAIN_TIMEOUT: how long SIGINT/SIGTERM may take before the process exits.
	DrainTimeout time.Duration
	// LOG_LEVEL: debug, info, warn or error.
	LogLevel string
	// PPROF_ADDR: where to serve net/http/pprof (e.g. 127.0.0.1:6060); empty = off.
	PprofAddr string

	// STATUS_TTL_SECONDS: a `working` status older than this is swept to idle.
	StatusTTL time.Duration
	// HOOK_FRESH_WINDOW_SECONDS: how long a hook-reported status outranks lower sources.
	HookFreshWindow time.Duration
	// MAX_CONNECTIONS_PER_MESH: live presences a mesh may hold, counted across instances.
	MaxConnectionsPerMesh int
	// MAX_CONNECTIONS_PER_INSTANCE: WebSocket sockets one instance holds, before and after
	// hello (fly.toml's hard limit); more are refused before the upgrade (503).
	MaxConnectionsPerInstance int
	// MAX_PREAUTH_PER_IP: sockets of one client IP that have not completed hello; more are
	// refused before the upgrade (429). 0 = no limit.
	MaxPreauthPerIP int
	// MAX_SESSIONS_PER_MEMBER: live and reconnecting presences of one member; its next new
	// session is refused capacity. 0 = no limit.
	MaxSessionsPerMember int
	// MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN: presences one member may open per minute (each
	// is a row kept for PRESENCE_RETENTION). 0 = no limit.
	MaxNewSessionsPerMemberPerMin int
	// HANDSHAKE_TIMEOUT: from the upgrade to hello_ack; a socket without a valid hello by
	// then is closed 1008 handshake_timeout.
	HandshakeTimeout time.Duration
	// MAX_HTTP_CONNS_PER_IP: plain HTTP connections (not WebSockets) one peer IP may hold
	// open; applied only without TRUST_PROXY_HEADERS (behind a proxy the peer is the proxy).
	// 0 = no limit.
	MaxHTTPConnsPerIP int
	// HELLO_IP_RATE_LIMIT_PER_MIN: hellos that reach the database (they passed every check
	// that needs none) per client IP: bucket capacity and refill per minute. 0 = no limit.
	HelloIPRateLimitPerMin int
	// TRUST_PROXY_HEADERS: take the client IP of per-IP limits from Fly-Client-IP (set it
	// only behind a proxy that sets that header: anyone can send it otherwise).
	TrustProxyHeaders bool
	// MAX_MESSAGE_BYTES: WebSocket frame cap, send payload cap and HTTP JSON body cap.
	MaxMessageBytes int
	// HOOK_RATE_LIMIT_PER_MIN: per (pid, cwd) bucket capacity and refill per minute.
	HookRateLimitPerMin int
	// HOOK_IP_RATE_LIMIT_PER_MIN: per client IP bucket capacity and refill per minute.
	HookIPRateLimitPerMin int
	// HOOK_LEGACY_UNAUTHENTICATED: accept hooks without a hook token (working/idle only).
	HookLegacyUnauthenticated bool
	// SEND_RATE_BURST, SEND_RATE_LIMIT_PER_MIN: per-member send bucket across all instances;
	// a rate of 0 turns the limit off (benchmarks).
	SendRateBurst     int
	SendRatePerMinute int
	// ALLOWED_ORIGINS: browser origins allowed to open /ws (comma-separated; "*" = any).
	AllowedOrigins []string
	// REQUIRE_SESSION_PROOF: refuse hellos without a valid sessionSig.
	RequireSessionProof bool
	// QUEUE_TTL: how long a message waits for an offline recipient.
	QueueTTL time.Duration
	// PRESENCE_GRACE_SECONDS: how long a dropped socket's presence waits for a reconnect.
	PresenceGrace time.Duration
	// INSTANCE_HEARTBEAT, INSTANCE_DEAD_AFTER: how often an instance records that it lives,
	// and how old that record may get before the others move its sessions to their grace
	// window (at least three heartbeats).
	InstanceHeartbeat time.Duration
	InstanceDeadAfter time.Duration
	// PRESENCE_RETENTION: how long an ended presence row is kept (its session key routes
	// direct messages to its member until then); the purge job deletes older ones.
	PresenceRetention time.Duration

	// NODE_ENV: development, production or test (kept for parity with the original).
	Env string
	// CLI_SYNC_SECRET: HS256 secret for /cli-sync tokens.
	CLISyncSecret string
	// BROKER_APP_SECRET: the trusted web app's bearer (approves device codes, mints tokens).
	AppSecret string
	// API_IP_RATE_LIMIT_PER_MIN: unauthenticated writes (device codes, joins, claims,
	// syncs) per client IP per minute.
	APIIPRateLimitPerMin int
	// BROKER_LEGACY_AUTH=1: accept body/query user_id on /cli/* (deprecated path).
	LegacyAuth bool
	// BROKER_INVITE_V2_ENABLED=1: enable POST /invites/:code/claim.
	InviteV2Enabled bool
	// BROKER_URL: broker URL embedded in invites.
	BrokerURL string
	// BROKER_PUBLIC_URL: public HTTPS base of this broker.
	PublicURL string
	// APP_URL: web app base for invite short links and device-code pages.
	AppURL string
	// EMAIL_FROM, POSTMARK_API_KEY, RESEND_API_KEY: invite e-mail.
	EmailFrom      string
	PostmarkAPIKey string
	ResendAPIKey   string
}

// Var describes one environment variable: its name, default and meaning. Vars is the
// single list the README's configuration table is checked against.
type Var struct {
	Name    string
	Default string
	Meaning string
}

// Vars lists every variable Load reads, in the order the README documents them.
var Vars = []Var{
	{"BROKER_PORT", "7900", "TCP port for HTTP and the WebSocket upgrade at /ws"},
	{"METRICS_PORT", "0", "extra port serving only /metrics (fly.toml's [metrics]); 0 = none"},
	{"DATABASE_URL", "", "Postgres URL (postgres:// or postgresql://); empty starts the embedded local cluster"},
	{"BROKER_DATA_DIR", "./.meshbroker/pg", "data directory of the embedded cluster (used only without DATABASE_URL)"},
	{"AUTO_MIGRATE", "0", "1 = `serve` applies migrations at start even with DATABASE_URL (the embedded database always is)"},
	{"EXPECTED_MIGRATION", "", "goose version /health/ready requires (e.g. 3); empty = no pin"},
	{"DRAIN_TIMEOUT", "20s", "longest a SIGINT/SIGTERM drain may take before exit (Go duration or seconds)"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"PPROF_ADDR", "", "address to serve Go's net/http/pprof on, e.g. 127.0.0.1:6060 (profiling); empty = off"},
	{"STATUS_TTL_SECONDS", "60", "a `working` status older than this is swept to idle"},
	{"HOOK_FRESH_WINDOW_SECONDS", "30", "how long a hook-reported status outranks manual and inferred ones"},
	{"MAX_CONNECTIONS_PER_MESH", "100", "live presences per mesh, counted across all instances"},
	{"MAX_CONNECTIONS_PER_INSTANCE", "10000", "WebSocket sockets one instance holds, before and after hello (fly.toml's hard_limit); more are refused 503 with Retry-After; lowered at start to fit the open-file limit"},
	{"MAX_PREAUTH_PER_IP", "64", "sockets of one client IP that have not completed hello; more are refused 429 with Retry-After (0 = no limit)"},
	{"MAX_SESSIONS_PER_MEMBER", "10", "live and reconnecting sessions of one member, across instances; its next new session is refused `capacity` (0 = no limit)"},
	{"MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN", "60", "new sessions one member may open per minute (takeovers and reconnects not counted); more are refused `capacity` (0 = no limit)"},
	{"MAX_HTTP_CONNS_PER_IP", "64", "plain HTTP connections (not WebSockets) one peer IP may hold open; more are closed at accept; not applied with TRUST_PROXY_HEADERS=1 (0 = no limit)"},
	{"HELLO_IP_RATE_LIMIT_PER_MIN", "600", "hellos per client IP that reach the database (signature verified): capacity and refill per minute; more are refused `rate_limit` with close 1013 (0 = no limit)"},
	{"HANDSHAKE_TIMEOUT", "10s", "from the upgrade to hello_ack; a socket without a valid hello by then is closed 1008 handshake_timeout"},
	{"TRUST_PROXY_HEADERS", "0", "1 = per-IP limits read the client IP from Fly-Client-IP (only behind Fly's proxy: anyone can send the header)"},
	{"MAX_MESSAGE_BYTES", "65536", "WebSocket frame cap, send payload cap and HTTP JSON body cap"},
	{"HOOK_RATE_LIMIT_PER_MIN", "30", "POST /hook/set-status bucket per (pid, cwd): capacity and refill per minute"},
	{"HOOK_IP_RATE_LIMIT_PER_MIN", "600", "POST /hook/set-status bucket per client IP: capacity and refill per minute"},
	{"HOOK_LEGACY_UNAUTHENTICATED", "1", "1 = accept hooks without a hook token, for working/idle only (the claudemesh CLI's hook); 0 = every hook needs `Authorization: Bearer <hook token>`"},
	{"SEND_RATE_BURST", "10", "sends a member may make at once (bucket capacity, shared by all its sessions on all instances)"},
	{"SEND_RATE_LIMIT_PER_MIN", "60", "sends per minute a member's bucket refills; 0 = no send limit (benchmarks)"},
	{"ALLOWED_ORIGINS", "", "browser origins allowed to open /ws, comma-separated (\"*\" = any); requests without Origin (CLI peers) are always allowed"},
	{"REQUIRE_SESSION_PROOF", "0", "1 = refuse a hello without a valid sessionSig"},
	{"QUEUE_TTL", "168h", "how long a message waits for an offline recipient (Go duration or seconds)"},
	{"INSTANCE_HEARTBEAT", "2s", "how often an instance records that it is alive (and runs the grace and dead-instance scans)"},
	{"INSTANCE_DEAD_AFTER", "7s", "an instance whose last heartbeat is older than this is dead: the others move its sessions into their grace window within about this plus one heartbeat (at least 3 × INSTANCE_HEARTBEAT)"},
	{"PRESENCE_GRACE_SECONDS", "90", "how long a dropped socket's presence waits for a reconnect before peer_left"},
	{"PRESENCE_RETENTION", "720h", "how long an ended presence is kept: until then a direct message to its session key goes to its member (Go duration or seconds; at least 1h)"},
	{"NODE_ENV", "development", "development, production or test"},
	{"GIT_SHA", "", "commit reported by /health (default: the build's VCS stamp)"},
	{"CLI_SYNC_SECRET", "", "HS256 secret for /cli-sync tokens"},
	{"BROKER_APP_SECRET", "", "the trusted web app's bearer: `Authorization: Bearer <it>` may approve device codes and mint tokens for any user (empty = only the user's own bearer may)"},
	{"API_IP_RATE_LIMIT_PER_MIN", "60", "unauthenticated writes (device codes, /join, invite claims, /cli-sync) per client IP per minute, per instance; more are refused 429 (0 = no limit)"},
	{"BROKER_LEGACY_AUTH", "0", "1 = accept the deprecated body/query user_id on /cli/*"},
	{"BROKER_INVITE_V2_ENABLED", "0", "1 = enable POST /invites/:code/claim"},
	{"BROKER_URL", "wss://ic.claudemesh.com/ws", "broker URL embedded in invites"},
	{"BROKER_PUBLIC_URL", "https://ic.claudemesh.com", "public HTTPS base of this broker"},
	{"APP_URL", "https://claudemesh.com", "web app base for invite links and device-code pages"},
	{"EMAIL_FROM", "noreply@claudemesh.com", "sender of invite e-mails"},
	{"POSTMARK_API_KEY", "", "send invite e-mails through Postmark"},
	{"RESEND_API_KEY", "", "send invite e-mails through Resend"},
	{"BROKER_PG_BINDIR", "", "directory holding initdb and postgres for the embedded database (default: PATH, then the usual install prefixes)"},
}

// Load reads the configuration through getenv (os.Getenv in production, a map in tests).
// It reports every invalid variable at once.
func Load(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	c := Config{
		Port:                          r.intRange("BROKER_PORT", 1, 65535),
		MetricsPort:                   r.intRange("METRICS_PORT", 0, 65535),
		DatabaseURL:                   r.databaseURL("DATABASE_URL"),
		DataDir:                       r.str("BROKER_DATA_DIR"),
		AutoMigrate:                   r.flag("AUTO_MIGRATE"),
		ExpectedMigration:             int64(r.optionalIntRange("EXPECTED_MIGRATION", 0, 1<<62)),
		DrainTimeout:                  r.duration("DRAIN_TIMEOUT"),
		LogLevel:                      r.oneOf("LOG_LEVEL", "debug", "info", "warn", "error"),
		PprofAddr:                     r.str("PPROF_ADDR"),
		StatusTTL:                     time.Duration(r.intRange("STATUS_TTL_SECONDS", 1, 86400)) * time.Second,
		HookFreshWindow:               time.Duration(r.intRange("HOOK_FRESH_WINDOW_SECONDS", 0, 86400)) * time.Second,
		MaxConnectionsPerMesh:         r.intRange("MAX_CONNECTIONS_PER_MESH", 1, 1_000_000),
		MaxConnectionsPerInstance:     r.intRange("MAX_CONNECTIONS_PER_INSTANCE", 1, 10_000_000),
		MaxPreauthPerIP:               r.intRange("MAX_PREAUTH_PER_IP", 0, 10_000_000),
		MaxSessionsPerMember:          r.intRange("MAX_SESSIONS_PER_MEMBER", 0, 1_000_000),
		MaxNewSessionsPerMemberPerMin: r.intRange("MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN", 0, 1_000_000),
		MaxHTTPConnsPerIP:             r.intRange("MAX_HTTP_CONNS_PER_IP", 0, 10_000_000),
		HelloIPRateLimitPerMin:        r.intRange("HELLO_IP_RATE_LIMIT_PER_MIN", 0, 100_000_000),
		HandshakeTimeout:              r.duration("HANDSHAKE_TIMEOUT"),
		TrustProxyHeaders:             r.flag("TRUST_PROXY_HEADERS"),
		MaxMessageBytes:               r.intRange("MAX_MESSAGE_BYTES", 1024, 64<<20),
		HookRateLimitPerMin:           r.intRange("HOOK_RATE_LIMIT_PER_MIN", 1, 1_000_000),
		HookIPRateLimitPerMin:         r.intRange("HOOK_IP_RATE_LIMIT_PER_MIN", 1, 1_000_000),
		HookLegacyUnauthenticated:     r.flag("HOOK_LEGACY_UNAUTHENTICATED"),
		SendRateBurst:                 r.intRange("SEND_RATE_BURST", 1, 1_000_000),
		SendRatePerMinute:             r.intRange("SEND_RATE_LIMIT_PER_MIN", 0, 100_000_000),
		AllowedOrigins:                r.list("ALLOWED_ORIGINS"),
		RequireSessionProof:           r.flag("REQUIRE_SESSION_PROOF"),
		QueueTTL:                      r.duration("QUEUE_TTL"),
		PresenceGrace:                 time.Duration(r.intRange("PRESENCE_GRACE_SECONDS", 0, 86400)) * time.Second,
		InstanceHeartbeat:             r.duration("INSTANCE_HEARTBEAT"),
		InstanceDeadAfter:             r.duration("INSTANCE_DEAD_AFTER"),
		PresenceRetention:             r.durationAtLeast("PRESENCE_RETENTION", time.Hour),
		Env:                           r.oneOf("NODE_ENV", "development", "production", "test"),
		CLISyncSecret:                 r.str("CLI_SYNC_SECRET"),
		AppSecret:                     r.str("BROKER_APP_SECRET"),
		APIIPRateLimitPerMin:          r.intRange("API_IP_RATE_LIMIT_PER_MIN", 0, 100_000_000),
		LegacyAuth:                    r.flag("BROKER_LEGACY_AUTH"),
		InviteV2Enabled:               r.flag("BROKER_INVITE_V2_ENABLED"),
		BrokerURL:                     r.url("BROKER_URL", "ws", "wss"),
		PublicURL:                     r.url("BROKER_PUBLIC_URL", "http", "https"),
		AppURL:                        r.url("APP_URL", "http", "https"),
		EmailFrom:                     r.str("EMAIL_FROM"),
		PostmarkAPIKey:                r.str("POSTMARK_API_KEY"),
		ResendAPIKey:                  r.str("RESEND_API_KEY"),
	}
	if c.InstanceHeartbeat > 0 && c.InstanceDeadAfter > 0 && c.InstanceDeadAfter < 3*c.InstanceHeartbeat {
		r.errs = append(r.errs, fmt.Errorf("INSTANCE_DEAD_AFTER=%s is invalid: expected at least 3 × INSTANCE_HEARTBEAT (%s), or a live instance that misses one beat is declared dead",
			c.InstanceDeadAfter, c.InstanceHeartbeat))
	}
	if len(r.errs) > 0 {
		return Config{}, errors.Join(r.errs...)
	}
	return c, nil
}

// Embedded reports whether the broker runs on its own local Postgres cluster.
func (c Config) Embedded() bool { return c.DatabaseURL == "" }

var defaults = func() map[string]string {
	m := make(map[string]string, len(Vars))
	for _, v := range Vars {
		m[v.Name] = v.Default
	}
	return m
}()

type reader struct {
	getenv func(string) string
	errs   []error
}

// raw returns the variable's value, or its default when unset or empty.
func (r *reader) raw(name string) string {
	def, ok := defaults[name]
	if !ok {
		panic("config: variable " + name + " is not declared in Vars")
	}
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

func (r *reader) fail(name, value, expects string) {
	r.errs = append(r.errs, fmt.Errorf("%s=%q is invalid: expected %s", name, value, expects))
}

func (r *reader) str(name string) string { return r.raw(name) }

func (r *reader) intRange(name string, lo, hi int) int {
	v := r.raw(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.fail(name, v, fmt.Sprintf("an integer from %d to %d", lo, hi))
		return 0
	}
	return n
}

func (r *reader) optionalIntRange(name string, lo, hi int) int {
	if r.raw(name) == "" {
		return 0
	}
	return r.intRange(name, lo, hi)
}

func (r *reader) list(name string) []string {
	var out []string
	for _, v := range strings.Split(r.raw(name), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (r *reader) flag(name string) bool {
	switch v := strings.ToLower(r.raw(name)); v {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	default:
		r.fail(name, v, "1 or 0 (true/false, yes/no, on/off)")
		return false
	}
}

func (r *reader) oneOf(name string, allowed ...string) string {
	v := strings.ToLower(r.raw(name))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.fail(name, v, "one of "+strings.Join(allowed, ", "))
	return ""
}

// duration accepts a Go duration ("20s", "1m30s") or a bare number of seconds.
func (r *reader) duration(name string) time.Duration {
	v := r.raw(name)
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.fail(name, v, `a positive duration such as "20s" or a number of seconds`)
		return 0
	}
	return d
}

// durationAtLeast is duration with a floor.
func (r *reader) durationAtLeast(name string, floor time.Duration) time.Duration {
	d := r.duration(name)
	if d > 0 && d < floor {
		r.fail(name, r.raw(name), "a duration of at least "+floor.String())
		return 0
	}
	return d
}

func (r *reader) databaseURL(name string) string {
	v := r.raw(name)
	if v == "" {
		return ""
	}
	if !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
		r.fail(name, redact(v), "a URL starting with postgres:// or postgresql://, or unset for the embedded database")
		return ""
	}
	if _, err := url.Parse(v); err != nil {
		r.fail(name, redact(v), "a parseable postgres:// URL")
		return ""
	}
	return v
}

func (r *reader) url(name string, schemes ...string) string {
	v := r.raw(name)
	u, err := url.Parse(v)
	if err == nil && u.Host != "" {
		for _, s := range schemes {
			if u.Scheme == s {
				return strings.TrimRight(v, "/")
			}
		}
	}
	r.fail(name, v, "an absolute "+strings.Join(schemes, " or ")+" URL")
	return ""
}

// redact hides a password in a database URL before it reaches an error message.
func redact(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		if i := strings.Index(v, "@"); i >= 0 {
			return "…" + v[i:]
		}
		return v
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
	}
	return u.String()
}
