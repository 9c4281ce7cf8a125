// Package api serves the broker's account surface over HTTP: device-code login and bearer
// tokens (/cli/token, /cli/device-code, /cli/sessions), meshes and their invites and grants
// (/cli/mesh/*, /cli/meshes), joining (/join, /invites/:code/claim, /cli-sync) and member
// administration (/mesh/:id/*). Request and response shapes are the original broker's, so
// the claudemesh CLI works unchanged; unlike the original, every route that changes state
// authenticates its caller (Routes declares how, and a test walks the table).
//
// Handlers never hold state between requests: everything is in Postgres, and changes that
// live sockets must see (revocations, kicks, profile updates, archived meshes) are
// published with pg_notify in the transaction that makes them, so every instance acts on
// them once they commit.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/ratelimit"
	"github.com/meshbroker/meshbroker/internal/server"
)

// Config is what the routes need from the broker configuration.
type Config struct {
	MaxBodyBytes      int64  // MAX_MESSAGE_BYTES: larger bodies are refused 413
	LegacyAuth        bool   // BROKER_LEGACY_AUTH=1: accept body/query user_id without a bearer
	AppSecret         string // BROKER_APP_SECRET: the trusted web app's bearer (approves device codes, mints tokens)
	CLISyncSecret     string // CLI_SYNC_SECRET: HS256 key of /cli-sync tokens
	InviteV2Enabled   bool   // BROKER_INVITE_V2_ENABLED=1: POST /invites/:code/claim
	BrokerURL         string // BROKER_URL: the wss URL written into invites
	PublicURL         string // BROKER_PUBLIC_URL
	AppURL            string // APP_URL: invite short links and device-code pages
	TrustProxyHeaders bool   // per-IP limits read Fly-Client-IP
	// IPRatePerMinute bounds the unauthenticated requests that write (device codes, joins,
	// claims, syncs) per client IP and instance; 0 = no limit.
	IPRatePerMinute int
}

// Sessions is what the API asks of the instance's live sessions (session.Hub).
type Sessions interface {
	// Kick ends one live or reconnecting session of a mesh (closed 4001 kicked wherever it
	// is held); found is false when there is none.
	Kick(ctx context.Context, meshID, presenceID string) (found bool, err error)
	// MemberPushPayload is the notification that pushes a system event to one member's
	// live sessions on every instance (published inside the caller's transaction).
	MemberPushPayload(meshID, memberID, event string, data any) (string, error)
}

// Deps are the API's collaborators.
type Deps struct {
	Sessions Sessions
	Pool     *pgxpool.Pool
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Config   Config
}

// API is the account surface. Safe for concurrent use.
type API struct {
	cfg      Config
	sessions Sessions
	pool     *pgxpool.Pool
	q        *db.Queries
	metrics  *metrics.Metrics
	log      *slog.Logger
	seen     *lastSeen          // bearer last_seen_at bumps, written in batches
	ipLimit  *ratelimit.Buckets // unauthenticated writes per client IP
	// userWrites: each user's budget of writes on this instance, in front of the shared
	// one (see takeUserWrite).
	userWrites *ratelimit.Buckets
	mux        *http.ServeMux
}

// New builds the API and its router.
func New(d Deps) *API {
	a := &API{cfg: d.Config, sessions: d.Sessions, pool: d.Pool, q: db.New(d.Pool), metrics: d.Metrics, log: d.Log,
		ipLimit: ratelimit.NewBuckets(ratelimit.PerMinute(d.Config.IPRatePerMinute)), mux: http.NewServeMux(),
		userWrites: ratelimit.NewBuckets(userWriteBurst, userWritesPerMinute/60)}
	a.seen = newLastSeen(a.q, d.Log)
	byPattern := map[string]map[string]Route{}
	var order []string
	for _, rt := range Routes() {
		if byPattern[rt.Pattern] == nil {
			byPattern[rt.Pattern] = map[string]Route{}
			order = append(order, rt.Pattern)
		}
		byPattern[rt.Pattern][rt.Method] = rt
	}
	for _, p := range order {
		methods := byPattern[p]
		a.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			rt, ok := methods[r.Method]
			if !ok {
				allow := make([]string, 0, len(methods))
				for m := range methods {
					allow = append(allow, m)
				}
				w.Header().Set("Allow", strings.Join(allow, ", "))
				server.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed")
				return
			}
			rt.handle(a, w, r)
		})
	}
	return a
}

// Prefixes are the path prefixes the API owns; the server routes them here.
var Prefixes = []string{"/cli/", "/cli-sync", "/join", "/invites/", "/mesh/"}

// ServeHTTP routes a request to its handler (unknown paths: 404 {"error":"not_found"}).
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern == "" {
		server.WriteError(w, http.StatusNotFound, "not_found")
		return
	}
	a.mux.ServeHTTP(w, r)
}

// Run writes the batched last_seen_at bumps until stop is closed.
func (a *API) Run(stop <-chan struct{}) { a.seen.run(stop) }

// Auth says how a route authenticates its caller. The route-walk test sends each route a
// request without the credential and with another user's, and checks nothing changed.
type Auth int

const (
	// AuthNone: anyone may call. Only for reads of public facts and for requests that
	// start a flow (a device code) whose every write is bounded per client IP.
	AuthNone Auth = iota
	// AuthBearer: Authorization: Bearer <cli token> (or, with BROKER_LEGACY_AUTH=1, a
	// user_id in the body or query); the handler then checks the user's rights.
	AuthBearer
	// AuthApprover: the trusted web app (Bearer BROKER_APP_SECRET) or a bearer of the user
	// the request acts for.
	AuthApprover
	// AuthInvite: a signed invite token or an invite code in the request.
	AuthInvite
	// AuthDeviceCode: the unguessable device code in the path.
	AuthDeviceCode
	// AuthBodyToken: the bearer being revoked, in the body.
	AuthBodyToken
	// AuthSyncJWT: a CLI_SYNC_SECRET-signed JWT in the body.
	AuthSyncJWT
)

func (a Auth) String() string {
	return [...]string{"none", "bearer", "approver", "invite", "device_code", "body_token", "sync_jwt"}[a]
}

// ErrorShape is how a route spells a failure, as the original did route by route.
type ErrorShape int

const (
	// Plain: {"error": "..."} (the /cli routes).
	Plain ErrorShape = iota
	// OKFalse: {"ok": false, "error": "..."} (/join, /cli-sync, /mesh/*).
	OKFalse
)

// Route is one entry of the API's route table.
type Route struct {
	Method  string
	Pattern string // net/http pattern without the method, e.g. /cli/mesh/{slug}/invite
	Auth    Auth
	// Writes: the route changes state (the route-walk test checks it refuses callers
	// without the credential).
	Writes bool
	Shape  ErrorShape
	// IPLimited: counted against the per-IP budget for unauthenticated writes.
	IPLimited bool
	Handler   func(a *API, c *Call) error
	Doc       string // one line for docs/http-api.md
}

// Call is one request in flight.
type Call struct {
	W     http.ResponseWriter
	R     *http.Request
	Route Route
	// Body is the raw JSON body once readBody has run (nil for no body).
	Body []byte
}

// Error is an answer other than success: an HTTP status and the body's error string, and
// optionally more fields.
type Error struct {
	Status int
	Msg    string
	Extra  map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

// Fail builds an *Error.
func Fail(status int, msg string) *Error { return &Error{Status: status, Msg: msg} }

func (rt Route) handle(a *API, w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		a.metrics.APIRequests.WithLabelValues(rt.Method+" "+rt.Pattern, strconv.Itoa(sw.code)).Inc()
	}()
	w = sw
	c := &Call{W: w, R: r, Route: rt}
	if rt.IPLimited && a.cfg.IPRatePerMinute > 0 && !a.ipLimit.Take(a.clientIP(r), 1) {
		w.Header().Set("Retry-After", "60")
		c.fail(Fail(http.StatusTooManyRequests, "rate limited"))
		return
	}
	err := rt.Handler(a, c)
	if err == nil {
		return
	}
	var e *Error
	if errors.As(err, &e) {
		c.fail(e)
		return
	}
	a.log.Error("api handler failed", "method", r.Method, "path", r.URL.Path, "err", err)
	c.fail(Fail(http.StatusInternalServerError, "internal"))
}

// statusWriter remembers the status a handler wrote, for broker_api_requests_total.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// fail writes e in the route's shape.
func (c *Call) fail(e *Error) {
	body := map[string]any{"error": e.Msg}
	if c.Route.Shape == OKFalse {
		body["ok"] = false
	}
	for k, v := range e.Extra {
		body[k] = v
	}
	server.WriteJSON(c.W, e.Status, body)
}

// OK writes a 200 JSON answer.
func (c *Call) OK(v any) error {
	server.WriteJSON(c.W, http.StatusOK, v)
	return nil
}

// readBody reads the body, at most MaxBodyBytes (413 "payload too large" beyond). An empty
// body reads as nil.
func (a *API) readBody(c *Call) error {
	if c.Body != nil {
		return nil
	}
	limit := a.cfg.MaxBodyBytes
	if limit <= 0 {
		limit = 64 << 10
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.W, c.R.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return Fail(http.StatusRequestEntityTooLarge, "payload too large")
	}
	if err != nil {
		return Fail(http.StatusBadRequest, "unreadable body")
	}
	c.Body = raw
	return nil
}

// Decode reads the body and unmarshals it into v; a body that is not a JSON object is
// answered 400 with badJSON (the route's own message, e.g. "Invalid body"). An empty body
// decodes as {} when emptyOK.
func (a *API) Decode(c *Call, v any, badJSON string, emptyOK bool) error {
	if err := a.readBody(c); err != nil {
		return err
	}
	raw := c.Body
	if len(strings.TrimSpace(string(raw))) == 0 {
		if !emptyOK {
			return Fail(http.StatusBadRequest, badJSON)
		}
		raw = []byte("{}")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return Fail(http.StatusBadRequest, badJSON)
	}
	return nil
}

// formatTimePtr renders an optional timestamp as the broker does (null when unset).
func formatTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return audit.FormatTime(*t)
}
