package session

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/protocol"
	"github.com/meshbroker/meshbroker/internal/ratelimit"
)

// Config is what sessions need from the broker configuration.
type Config struct {
	InstanceID                string
	MaxMessageBytes           int
	MaxPresencesPerMesh       int
	MaxSessionsPerMember      int           // live and reconnecting presences of one member; 0 = no limit
	MaxNewSessionsPerMinute   int           // presences one member may open per minute; 0 = no limit
	MaxSockets                int           // WebSocket sockets this instance holds (hello or not); 0 = no limit
	MaxPreauthPerIP           int           // sockets of one client IP that have not completed hello; 0 = no limit
	TrustProxyHeaders         bool          // take the client IP from Fly-Client-IP
	HandshakeTimeout          time.Duration // upgrade to hello_ack; 0 = 10 s
	HookLegacyUnauthenticated bool          // accept POST /hook/set-status without a hook token (working/idle only)
	RequireSessionProof       bool
	AllowedOrigins            []string
	PollInterval              time.Duration // how often every local presence is re-claimed regardless of wake-ups
	LeaseDuration             time.Duration
	SendRateBurst             int
	SendRatePerMinute         int // 0 = no send limit
	HookFreshWindow           time.Duration
	HookRatePerMinute         int
	HookIPRatePerMinute       int // POST /hook/set-status requests per client IP per minute
	HelloIPRatePerMinute      int // hellos that reach the database per client IP per minute; 0 = no limit
}

// Hub is one instance's registry of sessions and its delivery loop.
type Hub struct {
	cfg     Config
	pool    *pgxpool.Pool
	q       *db.Queries
	claimQ  *db.Queries // claims and delivered marks: on connections without bitmap scans (see claimPool); set by Run
	router  *delivery.Router
	limiter ratelimit.Limiter
	metrics *metrics.Metrics
	log     *slog.Logger

	mu         sync.Mutex
	byPresence map[string]*Session              // guarded by mu
	byMember   map[string]map[*Session]struct{} // guarded by mu
	byMesh     map[string]map[*Session]struct{} // guarded by mu
	dirty      map[string]dirtyEntry            // presences to claim for; guarded by mu
	claiming   map[string]bool                  // presences a claim worker is claiming for; guarded by mu
	revokedAt  map[string]time.Time             // members revoked in the last minute (OnRevoke); guarded by mu
	kick       chan struct{}                    // signals a claim worker that dirty is non-empty
	closed     bool                             // guarded by mu

	finishing  sync.WaitGroup // sessions writing their end (disconnect or end of presence)
	acks       *ackRetrier    // client_acks whose write failed, retried
	outbox     chan string    // notifications waiting for publishLoop
	delivered  chan int64     // delivery ids written to sockets, to mark delivered
	logMarks   chan logMark   // log cursors to store
	registered atomic.Bool    // this instance's row exists in instances

	sockets        atomic.Int64         // WebSocket sockets held, before and after hello (MaxSockets)
	ipMu           sync.Mutex           // guards preauth
	preauth        map[string]int       // sockets per client IP that have not completed hello (MaxPreauthPerIP)
	fullMu         sync.Mutex           // guards fullAt
	fullAt         map[string]time.Time // meshes found at capacity, and when (auth.Options.KnownFull)
	hookSecret     auth.HookSecret
	ipHellos       *ratelimit.Buckets     // hellos that reach the database, per client IP (HelloIPRatePerMinute)
	memberHellos   *ratelimit.Buckets     // hellos that write, per member (memberHelloBurst)
	memberVerifies *ratelimit.Buckets     // audit_verify requests per member (memberVerifyBurst)
	ipHooks        *ratelimit.Buckets     // hook requests per client IP, before the shared bucket (HookIPRatePerMinute)
	verifyMu       sync.Mutex             // guards verifies
	verifies       map[string]*verifyCall // audit verifications in flight, by mesh      // the key hook tokens are derived with
}

// NewHub builds a hub.
func NewHub(cfg Config, pool *pgxpool.Pool, router *delivery.Router, m *metrics.Metrics, log *slog.Logger) *Hub {
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Second
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = 30 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	return &Hub{
		cfg: cfg, pool: pool, q: db.New(pool), claimQ: db.New(pool), router: router, metrics: m, log: log, limiter: ratelimit.Limiter{Q: db.New(pool)},
		byPresence: map[string]*Session{}, byMember: map[string]map[*Session]struct{}{},
		byMesh: map[string]map[*Session]struct{}{}, dirty: map[string]dirtyEntry{}, claiming: map[string]bool{}, revokedAt: map[string]time.Time{},
		kick: make(chan struct{}, 1), delivered: make(chan int64, 4096), logMarks: make(chan logMark, 4096), acks: newAckRetrier(), outbox: make(chan string, publishQueue),
		preauth: map[string]int{}, fullAt: map[string]time.Time{}, verifies: map[string]*verifyCall{},
		memberHellos:   ratelimit.NewBuckets(memberHelloBurst, memberHelloPerSecond),
		memberVerifies: ratelimit.NewBuckets(memberVerifyBurst, memberVerifyPerSecond),
		ipHellos:       ratelimit.NewBuckets(ratelimit.PerMinute(cfg.HelloIPRatePerMinute)),
		ipHooks:        ratelimit.NewBuckets(ratelimit.PerMinute(cfg.HookIPRatePerMinute)),
	}
}

// Run drives the claim workers, the delivered-marking batcher and the poll until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	if cp, err := claimPool(h.pool); err != nil {
		h.log.Warn("claim pool; claiming on the main pool", "err", err)
	} else {
		defer cp.Close()
		h.claimQ = db.New(cp)
	}
	var wg sync.WaitGroup
	wg.Add(5 + claimWorkers)
	go func() { defer wg.Done(); h.pingLoop(ctx) }()
	go func() { defer wg.Done(); h.ackRetryLoop(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); h.publishLoop(ctx) }()
	for range claimWorkers {
		go func() { defer wg.Done(); h.claimLoop(ctx) }()
	}
	go func() { defer wg.Done(); h.markLoop(ctx) }()
	go func() { defer wg.Done(); h.logMarkLoop(ctx) }()
	go func() { defer wg.Done(); h.pollLoop(ctx) }()
	wg.Wait()
}

// register adds a session that completed its hello. It reports whether the session's
// member was revoked in the last minute: a revoke that committed after the hello read the
// member, and whose notification came before this registration, found no session to close.
func (h *Hub) register(s *Session) (revoked bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, revoked = h.revokedAt[s.member.ID]
	if _, archived := h.revokedAt[archivedKey(s.member.MeshID)]; archived {
		revoked = true
	}
	if old := h.byPresence[s.presenceID]; old != nil && old != s {
		// A takeover on this instance: the kick that follows would find s, not old, so old
		// is told here (it closes with session_replaced, its presence now belongs to s).
		h.removeLocked(old)
		old.replaced()
	}
	h.byPresence[s.presenceID] = s
	add := func(m map[string]map[*Session]struct{}, k string) {
		if m[k] == nil {
			m[k] = map[*Session]struct{}{}
		}
		m[k][s] = struct{}{}
	}
	add(h.byMember, s.member.ID)
	add(h.byMesh, s.member.MeshID)
	h.metrics.ConnectionsActive.Set(float64(len(h.byPresence)))
	return revoked
}

func (h *Hub) unregister(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *Hub) removeLocked(s *Session) {
	if h.byPresence[s.presenceID] == s {
		delete(h.byPresence, s.presenceID)
		if h.dirty[s.presenceID].s == s {
			delete(h.dirty, s.presenceID)
		}
	}
	del := func(m map[string]map[*Session]struct{}, k string) {
		delete(m[k], s)
		if len(m[k]) == 0 {
			delete(m, k)
		}
	}
	del(h.byMember, s.member.ID)
	del(h.byMesh, s.member.MeshID)
	h.metrics.ConnectionsActive.Set(float64(len(h.byPresence)))
}

// OnWake implements notifier.Handler.
func (h *Hub) OnWake(presenceIDs, memberIDs []string) {
	h.metrics.NotificationsReceived.WithLabelValues("wake").Inc()
	h.markDirty(append(presenceIDs, h.localPresences(h.byMember, memberIDs)...)...)
}

// localPresences lists the presences held here under the given keys of an index (byMember,
// byMesh).
func (h *Hub) localPresences(index map[string]map[*Session]struct{}, keys []string) []string {
	if len(keys) == 0 {
		return nil
	}
	var ids []string
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range keys {
		for s := range index[k] {
			ids = append(ids, s.presenceID)
		}
	}
	return ids
}

// OnLogWake implements notifier.Handler: new entries in these meshes' logs, read by every
// local presence of each.
func (h *Hub) OnLogWake(meshIDs []string) {
	h.metrics.NotificationsReceived.WithLabelValues("wake").Inc()
	h.markLog(h.localPresences(h.byMesh, meshIDs)...)
}

// OnKick implements notifier.Handler: a newer socket took the presence over.
func (h *Hub) OnKick(presenceID string, epoch int64) {
	h.metrics.NotificationsReceived.WithLabelValues("kick").Inc()
	h.mu.Lock()
	s := h.byPresence[presenceID]
	h.mu.Unlock()
	if s != nil && s.epoch < epoch {
		s.replaced()
	}
}

// OnRevoke implements notifier.Handler: a member was revoked, so its sockets here close and
// their presences end (peer_left).
func (h *Hub) OnRevoke(memberID string) {
	h.metrics.NotificationsReceived.WithLabelValues("revoke").Inc()
	h.closeRevoked(memberID)
}

// closeRevoked closes the sessions of revoked members held here, and remembers the members
// for a minute (see register).
func (h *Hub) closeRevoked(memberIDs ...string) {
	now := time.Now()
	h.mu.Lock()
	for m, at := range h.revokedAt {
		if now.Sub(at) > time.Minute {
			delete(h.revokedAt, m)
		}
	}
	var sessions []*Session
	for _, memberID := range memberIDs {
		h.revokedAt[memberID] = now
		for s := range h.byMember[memberID] {
			sessions = append(sessions, s)
		}
	}
	h.mu.Unlock()
	for _, s := range sessions {
		s.revoked()
	}
}

// systemEvent is the JSON a system push travels in between instances.
type systemEvent struct {
	MeshID        string `json:"meshId"`
	ExcludeMember string `json:"excludeMember,omitempty"`
	// ExcludePresence skips one session (the subject's own socket, for peer_visible/hidden).
	ExcludePresence string `json:"excludePresence,omitempty"`
	// OnlyMember, when set, limits the push to that member's sessions (profile_updated).
	OnlyMember string        `json:"onlyMember,omitempty"`
	Push       protocol.Push `json:"push"`
}

// OnSystem implements notifier.Handler: fan a system push out to local sessions.
func (h *Hub) OnSystem(payload []byte) {
	h.metrics.NotificationsReceived.WithLabelValues("system").Inc()
	var ev systemEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		h.log.Warn("bad system event", "err", err)
		return
	}
	frame, err := json.Marshal(ev.Push)
	if err != nil {
		return
	}
	h.mu.Lock()
	var targets []*Session
	for s := range h.byMesh[ev.MeshID] {
		if s.member.ID != ev.ExcludeMember && s.presenceID != ev.ExcludePresence && (ev.OnlyMember == "" || s.member.ID == ev.OnlyMember) {
			targets = append(targets, s)
		}
	}
	h.mu.Unlock()
	for _, s := range targets {
		s.enqueue(outFrame{data: frame})
	}
}

// OnConnected implements notifier.Handler: after (re)connecting the listener, claim for
// every local presence (but those a claim has started for since), in case a wake-up was
// missed meanwhile.
func (h *Hub) OnConnected() {
	h.pollStale(time.Now())
	go h.closeRevokedMissed()
}

// closeRevokedMissed closes the sessions whose member was revoked while this instance's
// LISTEN connection was down (the revoke notification is lost then). Members revoked in the
// last minute are remembered too, for hellos still in flight (see register).
func (h *Hub) closeRevokedMissed() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.closeKickedMissed(ctx)
	recent, err := h.q.RecentlyRevoked(ctx)
	if err != nil {
		h.log.Warn("check recently revoked members after reconnecting", "err", err)
	}
	if len(recent) > 0 {
		h.closeRevoked(recent...) // remembered before the list below is taken
	}
	h.mu.Lock()
	members := make([]string, 0, len(h.byMember))
	for m := range h.byMember {
		members = append(members, m)
	}
	h.mu.Unlock()
	if len(members) == 0 {
		return
	}
	revoked, err := h.q.RevokedAmong(ctx, members)
	if err != nil {
		h.log.Warn("check revoked members after reconnecting", "err", err)
		return
	}
	if len(revoked) > 0 {
		h.closeRevoked(revoked...)
	}
}

// pingLoop pings each socket every 30 s, from one goroutine for the whole instance rather
// than one per socket: each second it starts the pings that are due (each waits for its pong
// in a short-lived goroutine).
func (h *Hub) pingLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.mu.Lock()
			var due []*Session
			for _, s := range h.byPresence {
				if s.nextPing.Load() <= now.UnixNano() {
					s.nextPing.Store(now.Add(pingInterval).UnixNano())
					due = append(due, s)
				}
			}
			h.mu.Unlock()
			for _, s := range due {
				go s.ping()
			}
		}
	}
}

// systemPush publishes a system event to the mesh on every instance.
func (h *Hub) systemPush(ctx context.Context, meshID, excludeMember, event string, data any) {
	h.systemPushExcept(ctx, meshID, excludeMember, "", event, data)
}

// systemPushExcept is systemPush that also skips one presence.
func (h *Hub) systemPushExcept(ctx context.Context, meshID, excludeMember, excludePresence, event string, data any) {
	ev := systemEvent{MeshID: meshID, ExcludeMember: excludeMember, ExcludePresence: excludePresence, Push: systemPushFrame(meshID, event, data)}
	b, _ := json.Marshal(ev)
	if payload, ok := notifier.SystemPayload(b); ok {
		h.publish(ctx, payload)
	}
}

// systemPushFrame is a system push of event with data, to a session of meshID.
func systemPushFrame(meshID, event string, data any) protocol.Push {
	raw, _ := json.Marshal(data)
	return protocol.Push{
		Type: "push", MessageID: newUUID(), MeshID: meshID, SenderPubkey: "system", Priority: "low",
		CreatedAt: audit.FormatTime(time.Now()), Subtype: "system", Event: event, EventData: raw,
	}
}

// CloseAll closes every socket with 1001 (drain): their presences keep the grace window.
func (h *Hub) CloseAll() {
	h.mu.Lock()
	h.closed = true
	all := make([]*Session, 0, len(h.byPresence))
	for _, s := range h.byPresence {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.shutdown()
	}
}

// WaitFinished waits, until ctx ends, for the sessions that left the registry to finish
// writing their end (their presence disconnected or ended): a drain calls it before the
// pool closes.
func (h *Hub) WaitFinished(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.finishing.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sessions still writing their end: %w", ctx.Err())
	}
}

// Count returns the number of sessions held.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byPresence)
}

// HeldPresences lists the presences whose sockets this instance holds, with their epochs
// (jobs.Presences: a late heartbeat takes them back).
func (h *Hub) HeldPresences() (ids []string, epochs []int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids = make([]string, 0, len(h.byPresence))
	epochs = make([]int64, 0, len(h.byPresence))
	for id, s := range h.byPresence {
		ids, epochs = append(ids, id), append(epochs, s.epoch)
	}
	return ids, epochs
}

// SetRegistered records that this instance's row exists in instances (jobs.Presences):
// sockets are refused until it does.
func (h *Hub) SetRegistered() { h.registered.Store(true) }

// Registered reports whether this instance is recorded in the database (sockets are
// refused until it is).
func (h *Hub) Registered() bool { return h.registered.Load() }
