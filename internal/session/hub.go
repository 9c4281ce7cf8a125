package session

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
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
	delivered  chan int64     // delivery ids written to sockets, to mark delivered
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
		kick: make(chan struct{}, 1), delivered: make(chan int64, 4096), acks: newAckRetrier(),
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
	wg.Add(4 + claimWorkers)
	go func() { defer wg.Done(); h.pingLoop(ctx) }()
	go func() { defer wg.Done(); h.ackRetryLoop(ctx) }()
	for range claimWorkers {
		go func() { defer wg.Done(); h.claimLoop(ctx) }()
	}
	go func() { defer wg.Done(); h.markLoop(ctx) }()
	go func() { defer wg.Done(); h.pollLoop(ctx) }()
	wg.Wait()
}

// claimPool opens the connections claims and delivered marks run on: the main pool's
// settings, with bitmap scans off. A claim reads each recipient's pending rows through the
// partial index deliveries_*_pending_idx, which also holds entries for rows delivered since
// the last vacuum (the delivered_at update moves a row out of the index's predicate but leaves
// its old entry behind). A plain index scan marks such entries dead the first time it meets
// them, so later claims skip them; a bitmap scan never does, and visits every one of them, on
// its heap page, in every claim. The planner picks one or the other from the table's
// statistics, which lag on this fast-churning table: with a bitmap plan, claims measured 5×
// slower and growing through a 10 s run (538 index entries and 140 heap pages read per
// recipient for 8 live rows, docs/benchmarks.md). Nothing else runs on these connections, so
// no other query loses bitmap scans (ReleaseLeases needs one).
//
// The setting is made with SET on each new connection, not as a startup parameter:
// connection poolers in front of Postgres (PgBouncer, Supavisor) refuse unknown startup
// parameters, which would fail every claim.
func claimPool(main *pgxpool.Pool) (*pgxpool.Pool, error) {
	pc := main.Config().Copy()
	mainAfterConnect := pc.AfterConnect
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if mainAfterConnect != nil {
			if err := mainAfterConnect(ctx, conn); err != nil {
				return err
			}
		}
		if _, err := conn.Exec(ctx, "SET enable_bitmapscan = off"); err != nil {
			return fmt.Errorf("claim connection: %w", err)
		}
		return nil
	}
	pc.MaxConns = claimWorkers + 1 // the workers and the mark loop
	pc.MinConns = 0
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("claim pool: %w", err)
	}
	return pool, nil
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

type dirtyEntry struct {
	s        *Session
	fromPoll bool
}

// markDirty queues a claim for a presence held here.
func (h *Hub) markDirty(presenceIDs ...string) { h.mark(false, presenceIDs...) }

func (h *Hub) mark(fromPoll bool, presenceIDs ...string) {
	h.mu.Lock()
	n := 0
	for _, id := range presenceIDs {
		if s := h.byPresence[id]; s != nil {
			if e, ok := h.dirty[id]; ok && !e.fromPoll {
				continue // already queued by a notification
			}
			h.dirty[id] = dirtyEntry{s: s, fromPoll: fromPoll}
			n++
		}
	}
	h.mu.Unlock()
	if n > 0 {
		h.kickClaim()
	}
}

// OnWake implements notifier.Handler.
func (h *Hub) OnWake(presenceIDs, memberIDs []string) {
	h.metrics.NotificationsReceived.WithLabelValues("wake").Inc()
	ids := presenceIDs
	if len(memberIDs) > 0 {
		h.mu.Lock()
		for _, m := range memberIDs {
			for s := range h.byMember[m] {
				ids = append(ids, s.presenceID)
			}
		}
		h.mu.Unlock()
	}
	h.markDirty(ids...)
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

func (h *Hub) pollLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.pollStale(time.Now().Add(-h.cfg.PollInterval))
		}
	}
}

// pollStale claims for the local presences no claim has started for since before: a claim
// sees every row committed before it started, so a presence claimed since then can only
// have missed rows committed after that claim, which the next poll covers. Under traffic
// the poll thus costs nothing; for a quiet presence it is the guarantee behind the hints
// (missed notifications, expired client_ack leases).
func (h *Hub) pollStale(before time.Time) {
	cut := before.UnixNano()
	h.mu.Lock()
	ids := make([]string, 0, len(h.byPresence))
	for id, s := range h.byPresence {
		if s.lastClaim.Load() < cut {
			ids = append(ids, id)
		}
	}
	h.mu.Unlock()
	h.mark(true, ids...)
}

// claimLoop is one claim worker. It claims for dirty presences, many at once (a share of
// what is dirty, up to claimPresences per statement), so a burst of wake-ups costs a few
// round trips, not one per recipient, and the workers' statements run side by side. A
// presence is claimed by one worker at a time, so its pushes stay in order; wake-ups that
// arrive meanwhile wait for the next claim.
func (h *Hub) claimLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		}
		for ctx.Err() == nil {
			batch, more := h.takeDirty()
			if len(batch) == 0 {
				break
			}
			if more {
				h.kickClaim() // another worker takes the next share
			}
			h.claim(ctx, batch)
			h.mu.Lock()
			for _, e := range batch {
				delete(h.claiming, e.s.presenceID)
			}
			again := len(h.dirty) > 0
			h.mu.Unlock()
			if again {
				h.kickClaim() // wake-ups that waited for this claim
			}
		}
	}
}

// takeDirty takes a worker's share of the dirty presences that no worker is claiming for:
// those woken by a notification first, then the poll's. more reports that some are left.
func (h *Hub) takeDirty() (batch []dirtyEntry, more bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	share := min(claimPresences, max(claimMinShare, (len(h.dirty)+claimWorkers-1)/claimWorkers))
	batch = make([]dirtyEntry, 0, min(len(h.dirty), share))
	for _, wantPoll := range []bool{false, true} {
		for id, e := range h.dirty {
			if len(batch) == share {
				return batch, true
			}
			if e.fromPoll == wantPoll && !h.claiming[id] {
				delete(h.dirty, id)
				h.claiming[id] = true
				batch = append(batch, e)
			}
		}
	}
	return batch, false
}

func (h *Hub) kickClaim() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

const (
	claimBatch     = 256 // rows per presence per claim
	claimPresences = 64  // presences per claim statement at most
	claimMinShare  = 8   // presences per claim statement at least, when that many are dirty
	claimWorkers   = 4   // claim statements in flight at once
)

// claim leases and pushes the deliverable rows of a set of presences held here.
func (h *Hub) claim(ctx context.Context, batch []dirtyEntry) {
	byID := make(map[string]dirtyEntry, len(batch))
	p := db.ClaimDeliveriesParams{Lim: claimBatch, LeaseSeconds: h.cfg.LeaseDuration.Seconds()}
	for _, e := range batch {
		if e.s.isClosed() {
			continue
		}
		byID[e.s.presenceID] = e
		p.PresenceIds = append(p.PresenceIds, e.s.presenceID)
		p.MemberIds = append(p.MemberIds, e.s.member.ID)
		p.Epochs = append(p.Epochs, e.s.epoch)
	}
	if len(p.PresenceIds) == 0 {
		return
	}
	start := time.Now()
	rows, err := h.claimQ.ClaimDeliveries(ctx, p)
	h.metrics.ClaimDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("claim deliveries", "presences", len(p.PresenceIds), "err", err)
		}
		return
	}
	for _, e := range byID {
		e.s.lastClaim.Store(start.UnixNano()) // this claim saw every row committed before start
	}
	// FIFO per recipient.
	slices.SortFunc(rows, func(a, b db.ClaimDeliveriesRow) int {
		if c := strings.Compare(a.PresenceID, b.PresenceID); c != 0 {
			return c
		}
		return cmp.Compare(a.DeliveryID, b.DeliveryID)
	})
	counts := map[string]int{}
	frames := make(map[string][]byte, len(rows))
	for _, r := range rows {
		e, ok := byID[r.PresenceID]
		if !ok {
			continue
		}
		counts[r.PresenceID]++
		if r.Attempts > 1 {
			h.metrics.Redeliveries.Inc()
		}
		// A multicast message reaches many of the claimed presences with the same frame:
		// encode it once per claim (the bytes are only read from then on).
		data, ok := frames[r.MessageID]
		if !ok {
			push := protocol.Push{
				Type: "push", MessageID: r.MessageID, MeshID: r.MeshID, SenderPubkey: r.SenderPubkey,
				SenderMemberPubkey: r.SenderMemberPubkey, Priority: r.Priority, Nonce: r.Nonce,
				Ciphertext: r.Ciphertext, CreatedAt: audit.FormatTime(r.CreatedAt),
			}
			if r.ClientMessageID != nil {
				push.ClientMessageID = *r.ClientMessageID
			}
			var err error
			if data, err = json.Marshal(push); err != nil {
				continue
			}
			frames[r.MessageID] = data
		}
		f := outFrame{data: data, priority: r.Priority, storedAt: r.CreatedAt}
		if !e.s.clientAck {
			f.deliveryID = r.DeliveryID
		}
		e.s.enqueue(f)
	}
	for id, n := range counts {
		if byID[id].fromPoll {
			h.metrics.PollsWithWork.Inc()
		}
		if n == claimBatch {
			h.markDirty(id) // there may be more
		}
	}
}

// markLoop marks written deliveries delivered, in batches.
func (h *Hub) markLoop(ctx context.Context) {
	var ids []int64
	flush := func() {
		if len(ids) == 0 {
			return
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if _, err := h.claimQ.MarkDelivered(fctx, ids); err != nil {
			// The rows keep their lease; when it expires they are delivered again
			// (at-least-once), never lost.
			h.log.Warn("mark delivered", "n", len(ids), "err", err)
		}
		cancel()
		ids = ids[:0]
	}
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case id := <-h.delivered:
					ids = append(ids, id)
				default:
					flush()
					return
				}
			}
		case id := <-h.delivered:
			ids = append(ids, id)
		drain:
			for len(ids) < 1024 {
				select {
				case id := <-h.delivered:
					ids = append(ids, id)
				default:
					break drain
				}
			}
			flush()
		}
	}
}

// publish sends a notification, logging failures (notifications are hints).
func (h *Hub) publish(ctx context.Context, payload string) {
	if err := h.q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: payload}); err != nil {
		h.log.Warn("notify", "err", err)
	}
}

// systemPush publishes a system event to the mesh on every instance.
func (h *Hub) systemPush(ctx context.Context, meshID, excludeMember, event string, data any) {
	h.systemPushExcept(ctx, meshID, excludeMember, "", event, data)
}

// systemPushExcept is systemPush that also skips one presence.
func (h *Hub) systemPushExcept(ctx context.Context, meshID, excludeMember, excludePresence, event string, data any) {
	raw, _ := json.Marshal(data)
	ev := systemEvent{MeshID: meshID, ExcludeMember: excludeMember, ExcludePresence: excludePresence, Push: protocol.Push{
		Type: "push", MessageID: newUUID(), MeshID: meshID, SenderPubkey: "system", Priority: "low",
		CreatedAt: audit.FormatTime(time.Now()), Subtype: "system", Event: event, EventData: raw,
	}}
	b, _ := json.Marshal(ev)
	if payload, ok := notifier.SystemPayload(b); ok {
		h.publish(ctx, payload)
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
