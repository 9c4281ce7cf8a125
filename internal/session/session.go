package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/auth"
	"github.com/meshbroker/meshbroker/internal/connlimit"
	"github.com/meshbroker/meshbroker/internal/corkconn"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/notifier"
	"github.com/meshbroker/meshbroker/internal/presence"
	"github.com/meshbroker/meshbroker/internal/protocol"
	"github.com/meshbroker/meshbroker/internal/ratelimit"
)

const (
	preHelloLimit    = 16 << 10 // bytes: a hello with groups and capabilities fits easily
	pingInterval     = 30 * time.Second
	livenessCutoff   = 75 * time.Second
	writeTimeout     = 10 * time.Second
	maxQueuedBytes   = 8 << 20 // a client this far behind is disconnected (1013 slow_consumer)
	maxInFlightSends = 256     // sends one session may have waiting for storage
)

// outFrame is one frame for the writer. deliveryID > 0 marks the delivery delivered once
// the write succeeded; logSeq > 0 moves the socket's log cursor (claimlog.go) once it did. A
// frame with no data only moves the cursor (past skipped entries), in its turn.
type outFrame struct {
	data       []byte
	deliveryID int64
	logSeq     int64
	logGen     uint64    // the log cursor's generation the frame was read in
	msgID      string    // for message pushes: with storedAt, the order of a socket's pushes
	priority   string    // set for message pushes (counted in broker_messages_routed_total)
	storedAt   time.Time // when the message was stored (send→push latency)
}

// Session is one authenticated socket.
type Session struct {
	hub        *Hub
	ctx        context.Context // the socket's context (not cancelled by the HTTP request)
	conn       *websocket.Conn
	raw        *corkconn.Conn // conn's transport: corked while a batch of frames is written
	member     auth.Member
	hello      *protocol.Hello
	presenceID string
	epoch      int64
	clientAck  bool
	pubkey     string // routing identity: session key, else member key
	name       string // effective display name

	inflight   chan struct{}     // sends submitted and not yet acked (capacity maxInFlightSends)
	control    *ratelimit.Bucket // the budget of frames other than send (see bounds.go)
	sendBudget *ratelimit.Bucket // the member's send rate, locally, in front of its shared bucket

	// The outbound queue. An idle socket holds no writer goroutine and no buffer: enqueue
	// starts a drainer when the queue goes from empty to non-empty, and the drainer exits
	// when it is empty again (10 000 idle sockets must cost what bare sockets cost).
	qmu          sync.Mutex
	queue        []outFrame    // guarded by qmu
	draining     bool          // a drainer goroutine runs; guarded by qmu
	queuedBytes  int64         // bytes in queue; guarded by qmu
	nextPing     atomic.Int64  // unix nanos of this socket's next liveness ping
	lastClaim    atomic.Int64  // unix nanos when the last claim for this socket started
	lastLogClaim atomic.Int64  // unix nanos when the last read of the mesh log for this socket started
	ackCredit    atomic.Int64  // message pushes written and not yet acknowledged: what client_acks may cost
	log          logCursor     // the socket's position in its mesh's log
	done         chan struct{} // closed when the session ends
	endOnce      sync.Once
	endKind      atomic.Int32 // why the socket is closing (endDrop, endReplaced, …)
}

const (
	endDrop     int32 = iota // lost without a close frame, liveness, write failure: grace window
	endNormal                // the client closed normally: the presence ends now
	endReplaced              // another socket took the presence over
	endShutdown              // this instance drains: grace window
	endRevoked               // the member was revoked: the presence ends now
	endKicked                // this session was kicked (or its mesh archived): the presence ends now
)

// ServeHTTP handles GET /ws.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.metrics.ConnectionsTotal.Inc()
	if origin := r.Header.Get("Origin"); origin != "" && !h.originAllowed(origin) {
		http.Error(w, `{"error":"origin_not_allowed"}`, http.StatusForbidden)
		return
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed || !h.registered.Load() {
		http.Error(w, `{"error":"draining"}`, http.StatusServiceUnavailable)
		return
	}
	if !h.admitSocket() {
		h.refuseUpgrade(w, http.StatusServiceUnavailable, reasonInstanceFull, 5*time.Second)
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			h.releaseSocket()
		}
	}()
	ip := connlimit.ClientIP(r, h.cfg.TrustProxyHeaders)
	if !h.admitPreauth(ip) {
		h.refuseUpgrade(w, http.StatusTooManyRequests, reasonPreauthPerIP, h.cfg.HandshakeTimeout)
		return
	}
	defer h.releasePreauth(ip) // serve returns once the hello is done, whatever its outcome
	cw := corkconn.Wrap(w)
	conn, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		CompressionMode:    websocket.CompressionDisabled, // ciphertext does not compress
		InsecureSkipVerify: true,                          // the Origin rule above replaces the library's
	})
	if err != nil {
		return
	}
	if cw.Conn() == nil { // Accept succeeded without hijacking through cw: cannot happen
		conn.Close(websocket.StatusInternalError, "")
		return
	}
	conn.SetReadLimit(preHelloLimit)
	handedOff = h.serve(r, conn, cw.Conn())
}

func (h *Hub) originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	for _, a := range h.cfg.AllowedOrigins {
		if a == "*" || strings.EqualFold(a, origin) || strings.EqualFold(a, u.Host) {
			return true
		}
	}
	return false
}

func writeNow(ctx context.Context, conn *websocket.Conn, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	_ = conn.Write(wctx, websocket.MessageText, b)
}

// readText reads one frame, enforcing text frames of valid UTF-8.
func readText(ctx context.Context, conn *websocket.Conn) ([]byte, error) {
	typ, data, err := conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		conn.Close(websocket.StatusUnsupportedData, "binary frames are not accepted")
		return nil, errors.New("binary frame")
	}
	return data, nil
}

// maxPreHelloFrames is how many frames other than hello a socket may send before its hello
// (each answered no_hello); a socket that keeps going is closed.
const maxPreHelloFrames = 8

// handshake reads frames until a valid hello, answering others with no_hello. It gives up
// at deadline, closing the socket with 1008 handshake_timeout: the close frame is written by
// a timer, since a read cut short by its context would drop the connection without one.
func (h *Hub) handshake(ctx context.Context, conn *websocket.Conn, deadline time.Time) (*protocol.Hello, bool) {
	timer := time.AfterFunc(time.Until(deadline), func() {
		h.metrics.ConnectionsRejected.WithLabelValues(reasonHandshakeTimeout).Inc()
		conn.Close(websocket.StatusPolicyViolation, protocol.ReasonHandshakeTimout)
	})
	hello, ok := h.readHello(ctx, conn)
	if !timer.Stop() {
		return nil, false // the deadline came first: the socket is closing
	}
	return hello, ok
}

func (h *Hub) readHello(ctx context.Context, conn *websocket.Conn) (*protocol.Hello, bool) {
	for others := 0; ; others++ {
		data, err := readText(ctx, conn)
		if err != nil {
			return nil, false
		}
		f, err := protocol.Decode(data)
		if errors.Is(err, protocol.ErrInvalidUTF8) {
			conn.Close(websocket.StatusInvalidFramePayloadData, "invalid UTF-8")
			return nil, false
		}
		if err == nil && f.Type == "hello" {
			return f.Body.(*protocol.Hello), true
		}
		if err != nil && f.Type == "hello" {
			h.refuseHello(ctx, conn, &auth.Rejection{Code: protocol.CodeMalformed, Message: "hello rejected: malformed"})
			return nil, false
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		if others >= maxPreHelloFrames {
			cancel()
			h.metrics.ConnectionsRejected.WithLabelValues(reasonNoHello).Inc()
			conn.Close(websocket.StatusPolicyViolation, protocol.CodeNoHello)
			return nil, false
		}
		writeNow(wctx, conn, protocol.NewError(protocol.CodeNoHello, "must send hello first", f.ReqID))
		cancel()
	}
}

// refuseHello answers a refused hello: the error frame, then close 1008 with the code.
func (h *Hub) refuseHello(ctx context.Context, conn *websocket.Conn, rej *auth.Rejection) {
	h.metrics.ConnectionsRejected.WithLabelValues(rej.Code).Inc()
	writeNow(ctx, conn, protocol.NewError(rej.Code, rej.Message, nil))
	conn.Close(websocket.StatusPolicyViolation, rej.Code)
}

// serve runs a socket's handshake and, once its hello is accepted, hands the socket to a
// session goroutine of its own (handedOff true: the session releases the socket's count
// when it ends).
func (h *Hub) serve(reqHTTP *http.Request, conn *websocket.Conn, raw *corkconn.Conn) (handedOff bool) {
	ctx := context.WithoutCancel(reqHTTP.Context())
	deadline := time.Now().Add(h.cfg.HandshakeTimeout)
	hello, ok := h.handshake(ctx, conn, deadline)
	if !ok {
		return false
	}
	hctx, cancel := context.WithDeadline(ctx, deadline)
	opt := h.helloOptions()
	// The checks that need no database come first: a forged hello costs no query.
	if rej := auth.Precheck(hello, time.Now(), opt); rej != nil {
		cancel()
		h.refuseHello(ctx, conn, rej)
		return false
	}
	// A hello that passed them costs a transaction: an IP gets so many a minute (a stranger
	// signs hellos with keys of its own making, which pass them).
	if !h.ipHellos.Take(connlimit.ClientIP(reqHTTP, h.cfg.TrustProxyHeaders), 1) {
		cancel()
		h.metrics.ConnectionsRejected.WithLabelValues(reasonHelloRate).Inc()
		writeNow(ctx, conn, protocol.NewError(protocol.CodeRateLimit, "too many hellos from this address; retry later", nil))
		conn.Close(websocket.StatusTryAgainLater, protocol.CodeRateLimit)
		return false
	}
	// Verification and the presence share one transaction: one commit per hello, and the
	// remembered signature commits with the presence it admitted.
	tx, err := h.pool.Begin(hctx)
	if err != nil {
		cancel()
		h.log.Warn("hello: begin", "err", err)
		conn.Close(websocket.StatusTryAgainLater, "database unavailable")
		return false
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	q := db.New(tx)
	member, err := auth.Authorize(hctx, auth.PGStore{Q: q}, hello, time.Now(), opt)
	var rej *auth.Rejection
	if err != nil {
		// Before anything is written to the client: the transaction holds a pooled
		// connection, and a rejected client may take its time answering the close.
		_ = tx.Rollback(ctx)
	}
	if errors.As(err, &rej) {
		cancel()
		if rej.Message == auth.MsgMeshFull {
			h.noteFull(hello.MeshID, true)
		}
		h.refuseHello(ctx, conn, rej)
		return false
	}
	if err != nil {
		cancel()
		h.log.Warn("hello: database error", "err", err)
		conn.Close(websocket.StatusTryAgainLater, "database unavailable")
		return false
	}
	s := &Session{
		hub: h, conn: conn, raw: raw, member: member, hello: hello,
		done: make(chan struct{}), inflight: make(chan struct{}, maxInFlightSends),
		control:    ratelimit.NewBucket(controlBurst, controlPerSecond),
		sendBudget: ratelimit.NewBucket(float64(h.cfg.SendRateBurst), float64(h.cfg.SendRatePerMinute)/60),
	}
	for _, c := range hello.Capabilities {
		if c == "client_ack" {
			s.clientAck = true
		}
	}
	s.pubkey = member.Pubkey
	if hello.SessionPubkey != "" {
		s.pubkey = hello.SessionPubkey
	}
	s.name = member.DisplayName
	if hello.DisplayName != "" {
		s.name = hello.DisplayName
	}
	ack, fresh, restored, err := h.attach(hctx, q, s)
	cancel()
	// The commit gets a deadline of its own: had it shared the handshake's, a commit that
	// went through just as that fired would leave a presence nobody holds.
	cctx, ccancel := context.WithTimeout(ctx, writeTimeout)
	switch {
	case err == nil:
		if err = tx.Commit(cctx); err != nil {
			err = fmt.Errorf("commit hello: %w", err)
			// Its outcome is unknown: a presence that did commit enters its grace window.
			_, _ = h.q.DisconnectPresence(cctx, db.DisconnectPresenceParams{ID: s.presenceID, Epoch: s.epoch})
		}
	case errors.As(err, &rej):
		// Nothing was inserted; committing keeps the hello's signature remembered, so the
		// refused hello cannot be replayed once there is room.
		_ = tx.Commit(cctx)
	default:
		_ = tx.Rollback(cctx)
	}
	ccancel()
	if errors.As(err, &rej) {
		h.refuseHello(ctx, conn, rej)
		return false
	}
	if err != nil {
		h.log.Warn("hello: attach presence", "err", err)
		conn.Close(websocket.StatusTryAgainLater, "database unavailable")
		return false
	}
	s.ctx = ctx
	s.nextPing.Store(time.Now().Add(pingInterval).UnixNano())
	if h.register(s) {
		// Revoked while this hello was in flight: the revoke found no session to close.
		s.revoked()
		go s.finish(ctx)
		return true
	}
	if s.epoch > 1 {
		// Whoever held the presence before closes, wherever it is — even when the presence
		// was in its grace window: an instance cut off from the database has its presences
		// put there by the others while its sockets stay open.
		h.publish(ctx, notifier.KickPayload(s.presenceID, s.epoch))
	}
	s.send(ack)
	if fresh {
		event, data := "peer_joined", map[string]any{"name": s.name, "pubkey": s.pubkey, "groups": rawOr(ack.groupsJSON, "[]")}
		if restored != nil {
			event = "peer_returned"
			data["lastSeenAt"] = restored.lastSeenAt
			data["summary"] = restored.summary
		}
		h.systemPush(ctx, member.MeshID, member.ID, event, data)
	}
	h.mark(false, true, true, s.presenceID)
	conn.SetReadLimit(int64(h.cfg.MaxMessageBytes))
	// The socket's life continues on a fresh goroutine and the HTTP handler returns (the
	// connection is hijacked, so net/http lets go of it). The handshake grew this goroutine's
	// stack (JSON, ed25519, pgx); an idle socket should not keep that for hours.
	go func() {
		s.readLoop(ctx)
		s.finish(ctx)
	}()
	return true
}

// helloAck is the hello_ack frame.
type helloAck struct {
	Type              string          `json:"type"`
	PresenceID        string          `json:"presenceId"`
	MemberDisplayName string          `json:"memberDisplayName"`
	MemberProfile     memberProfile   `json:"memberProfile"`
	MeshPolicy        json.RawMessage `json:"meshPolicy,omitempty"`
	Restored          bool            `json:"restored,omitempty"`
	LastSummary       string          `json:"lastSummary,omitempty"`
	LastSeenAt        string          `json:"lastSeenAt,omitempty"`
	RestoredGroups    json.RawMessage `json:"restoredGroups,omitempty"`
	RestoredStats     json.RawMessage `json:"restoredStats,omitempty"`
	groupsJSON        []byte
}

type memberProfile struct {
	RoleTag     *string         `json:"roleTag"`
	Groups      json.RawMessage `json:"groups"`
	MessageMode string          `json:"messageMode"`
}

type restoredState struct {
	lastSeenAt string
	summary    string
}

func rawOr(b []byte, def string) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage(def)
	}
	return json.RawMessage(b)
}

// attach creates the presence for a hello, or takes the live one with the same identity
// over, inside the hello's transaction (q). fresh is false for a takeover or a reconnect
// inside the grace window (no peer_joined is announced then). A hello costs few round
// trips: the member, mesh and peer state came with the hello lookup; a takeover is one
// statement, a new presence two (the per-mesh lock, then counts + insert + audit). A limit
// reached since the lookup, or an identity another member took meanwhile, is an
// *auth.Rejection.
func (h *Hub) attach(ctx context.Context, q *db.Queries, s *Session) (ack helloAck, fresh bool, restored *restoredState, err error) {
	hl, mem := s.hello, s.member
	ack = helloAck{Type: "hello_ack", MemberDisplayName: s.name, MeshPolicy: meshPolicy(mem.MeshPolicy),
		MemberProfile: memberProfile{RoleTag: mem.RoleTag, Groups: boundedGroups(mem.DefaultGroups), MessageMode: mem.MessageMode}}

	groups, _ := json.Marshal(hl.Groups)
	ps := mem.Saved
	if len(hl.Groups) == 0 {
		groups = []byte("[]")
		if saved := boundedGroups(savedGroups(ps)); len(saved) > 2 {
			groups = saved
			ack.RestoredGroups = saved
		} else if len(mem.DefaultGroups) > 0 {
			groups = boundedGroups(mem.DefaultGroups)
		}
	}
	visible, profile := true, []byte("{}")
	if ps != nil {
		visible, profile = ps.Visible, boundedProfile(ps.Profile)
		ack.Restored = true
		if ps.Summary != nil {
			ack.LastSummary = protocol.TruncateUTF8(*ps.Summary, protocol.MaxSummaryBytes)
		}
		if ps.LastSeenAt != nil {
			ack.LastSeenAt = audit.FormatTime(*ps.LastSeenAt)
		}
		ack.RestoredStats = boundedStats(ps.Stats)
		restored = &restoredState{lastSeenAt: ack.LastSeenAt, summary: ack.LastSummary}
	}
	ack.groupsJSON = groups

	instance := h.cfg.InstanceID
	str := func(v string) *string {
		if v == "" {
			return nil
		}
		return &v
	}
	var pv *int32
	if hl.ProtocolVersion != nil {
		v := int32(*hl.ProtocolVersion)
		pv = &v
	}
	caps := hl.Capabilities
	if caps == nil {
		caps = []string{}
	}
	// Authorize verified a sessionSig that was sent.
	proven := hl.SessionSig != "" && hl.SessionPubkey != ""
	key := auth.IdentityKey(mem.ID, hl)
	auditAt := audit.TruncateToMillis(time.Now())
	to, err := q.TakeOverPresence(ctx, db.TakeOverPresenceParams{
		InstanceID: &instance, MemberID: mem.ID, SessionID: hl.SessionID, SessionPubkey: str(hl.SessionPubkey),
		DisplayName: str(hl.DisplayName), Pid: int32(hl.Pid), Cwd: hl.Cwd, Hostname: str(hl.Hostname),
		PeerType: str(hl.PeerType), Channel: str(hl.Channel), Model: str(hl.Model), Capabilities: caps,
		ProtocolVersion: pv, MeshID: mem.MeshID, IdentityKey: key, Proven: proven,
		ActorName: s.name, MemberPubkey: mem.Pubkey, AuditAt: auditAt,
	})
	if err == nil {
		s.presenceID, s.epoch = to.ID, to.ConnectionEpoch
		ack.PresenceID = to.ID
		h.metrics.Takeovers.Inc()
		ack.groupsJSON = to.Groups
		return ack, false, restored, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return ack, false, nil, fmt.Errorf("take over presence: %w", err)
	}
	// A new presence counts against the mesh's and the member's capacity: the counts run
	// under a per-mesh lock, so concurrent hellos cannot all slip under the limits together.
	if err := q.LockMeshPresences(ctx, mem.MeshID); err != nil {
		return ack, false, nil, fmt.Errorf("lock mesh presences: %w", err)
	}
	payload, err := json.Marshal(map[string]any{"pubkey": mem.Pubkey, "groups": json.RawMessage(groups), "restored": ps != nil})
	if err != nil {
		return ack, false, nil, fmt.Errorf("peer_joined audit payload: %w", err)
	}
	ins, err := q.InsertPresence(ctx, db.InsertPresenceParams{
		MaxPresences: int64(h.cfg.MaxPresencesPerMesh), MaxMemberSessions: int64(h.cfg.MaxSessionsPerMember),
		MaxNewPerMinute: int64(h.cfg.MaxNewSessionsPerMinute),
		ID:              ids.New(), MeshID: mem.MeshID, MemberID: mem.ID, IdentityKey: key, SessionID: hl.SessionID,
		SessionPubkey: str(hl.SessionPubkey), Proven: proven, DisplayName: str(hl.DisplayName), Pid: int32(hl.Pid), Cwd: hl.Cwd,
		Hostname: str(hl.Hostname), PeerType: str(hl.PeerType), Channel: str(hl.Channel), Model: str(hl.Model),
		Capabilities: caps, ProtocolVersion: pv, InstanceID: &instance, Groups: groups, Visible: visible, Profile: profile,
		ActorName: s.name, AuditPayload: payload, AuditAt: auditAt,
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		// The identity's live presence appeared after the lookup and is not this member's
		// to take (another member's, or proven): the lookup would have refused it.
		return ack, false, nil, &auth.Rejection{Code: protocol.CodeUnauthorized, Message: auth.MsgSessionKeyTaken}
	}
	if err != nil {
		return ack, false, nil, fmt.Errorf("insert presence: %w", err)
	}
	switch {
	case !ins.MeshOk:
		h.noteFull(mem.MeshID, true)
		return ack, false, nil, &auth.Rejection{Code: protocol.CodeCapacity, Message: auth.MsgMeshFull}
	case !ins.MemberOk:
		return ack, false, nil, &auth.Rejection{Code: protocol.CodeCapacity, Message: auth.MsgMemberFull}
	case !ins.RateOk:
		return ack, false, nil, &auth.Rejection{Code: protocol.CodeCapacity, Message: auth.MsgMemberTooFast}
	case !ins.SidOk:
		return ack, false, nil, &auth.Rejection{Code: protocol.CodeUnauthorized, Message: auth.MsgSessionIDTaken}
	}
	h.noteFull(mem.MeshID, false)
	s.presenceID, s.epoch = ins.ID, ins.ConnectionEpoch
	ack.PresenceID = ins.ID
	return ack, true, restored, nil
}

func (s *Session) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	s.enqueue(outFrame{data: b})
}

// enqueue hands a frame to the writer. It never blocks the producer (a claim worker, the
// send batcher, a notification): a client whose queue exceeds maxQueuedBytes is cut off
// (1013 slow_consumer), keeps its presence for the grace window, and gets what it missed
// on reconnect.
func (s *Session) enqueue(f outFrame) {
	s.qmu.Lock()
	if s.isClosed() {
		s.qmu.Unlock()
		return
	}
	if s.queuedBytes+int64(len(f.data)) > maxQueuedBytes {
		s.qmu.Unlock()
		s.end(endDrop, websocket.StatusTryAgainLater, protocol.ReasonSlowConsumer)
		return
	}
	s.queue = append(s.queue, f)
	s.queuedBytes += int64(len(f.data))
	start := !s.draining
	s.draining = true
	s.qmu.Unlock()
	if start {
		go s.drain()
	}
}

// drain writes queued frames in order until the queue is empty, then exits. At most one
// drainer runs per session.
func (s *Session) drain() {
	for {
		s.qmu.Lock()
		batch := s.queue
		s.queue = nil
		s.queuedBytes = 0
		if len(batch) == 0 || s.isClosed() {
			s.draining = false
			s.qmu.Unlock()
			return
		}
		s.qmu.Unlock()
		// The batch leaves in one write: frames are collected while corked (they cannot
		// block) and sent by Uncork. Nothing is marked delivered before that write succeeded.
		err := s.writeBatch(batch)
		if err != nil {
			s.end(endDrop, websocket.StatusTryAgainLater, "write failed")
			s.qmu.Lock()
			s.draining = false
			s.qmu.Unlock()
			return
		}
		for _, f := range batch {
			if f.priority != "" {
				if s.clientAck && s.ackCredit.Load() < maxAckCredit {
					s.ackCredit.Add(1)
				}
				s.hub.metrics.MessagesRouted.WithLabelValues(f.priority).Inc()
				s.hub.metrics.SendToPush.Observe(time.Since(f.storedAt).Seconds())
			}
			if f.deliveryID > 0 {
				s.hub.delivered <- f.deliveryID
			}
			if f.logSeq > 0 {
				s.logWrittenTo(f.logSeq, f.logGen)
			}
		}
	}
}

// writeBatch writes frames to the socket in one system call per corkChunk bytes. Each chunk has writeTimeout to leave, as
// each frame had before: a slow reader catching up on a long queue is not cut off for the
// queue's length, and a cork buffer never holds more than about a chunk.
func (s *Session) writeBatch(batch []outFrame) error {
	for len(batch) > 0 {
		n, err := s.writeChunk(batch)
		if err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// writeChunk writes the first corkChunk bytes' worth of frames in one system call and
// reports how many frames it took. A corked write only appends to the buffer; its deadline
// bounds waiting for the library's write lock (a ping or close frame being written). One
// deadline serves the chunk: a context per frame was 9 % of the broker's CPU under a
// broadcast load.
func (s *Session) writeChunk(batch []outFrame) (int, error) {
	wctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	defer cancel()
	s.raw.Cork()
	corked := 0
	for i, f := range batch {
		if f.data == nil {
			continue // moves the log cursor only
		}
		if err := s.conn.Write(wctx, websocket.MessageText, f.data); err != nil {
			_ = s.raw.Uncork(writeTimeout)
			return 0, err
		}
		if corked += len(f.data); corked >= corkChunk {
			return i + 1, s.raw.Uncork(writeTimeout)
		}
	}
	return len(batch), s.raw.Uncork(writeTimeout)
}

// corkChunk is how many bytes of frames a drain round collects before writing them.
const corkChunk = 64 << 10

// ping checks liveness once: a socket whose pong does not come within 45 s (75 s after the
// previous proof of life) is cut off and its presence enters the grace window.
func (s *Session) ping() {
	pctx, cancel := context.WithTimeout(s.ctx, livenessCutoff-pingInterval)
	err := s.conn.Ping(pctx)
	cancel()
	if err != nil {
		s.end(endDrop, websocket.StatusGoingAway, "liveness timeout")
		return
	}
	_ = s.hub.q.TouchPresence(s.ctx, db.TouchPresenceParams{ID: s.presenceID, Epoch: s.epoch})
}

func (s *Session) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// end closes the socket once, recording why.
func (s *Session) end(kind int32, code websocket.StatusCode, reason string) {
	s.endOnce.Do(func() {
		s.endKind.Store(kind)
		close(s.done)
		go s.conn.Close(code, reason)
	})
}

func (s *Session) replaced() {
	s.end(endReplaced, websocket.StatusNormalClosure, protocol.ReasonSessionReplaced)
}

// revoked closes the socket of a member that was revoked: 4002 revoked, on which newer
// claudemesh CLIs stop reconnecting (their next hello would be refused unauthorized).
func (s *Session) revoked() {
	s.end(endRevoked, protocol.CloseRevoked, protocol.ReasonRevoked)
}

// kicked closes this one session: 4001 kicked, on which newer claudemesh CLIs stop
// reconnecting; the presence ends now.
func (s *Session) kicked() {
	s.end(endKicked, protocol.CloseKicked, protocol.ReasonKicked)
}

// meshDeleted closes a session of an archived mesh: 4002 mesh_deleted (no reconnect: the
// next hello is refused unauthorized).
func (s *Session) meshDeleted() {
	s.end(endRevoked, protocol.CloseRevoked, protocol.ReasonMeshDeleted)
}

func (s *Session) shutdown() {
	s.end(endShutdown, websocket.StatusGoingAway, protocol.ReasonShuttingDown)
}

func (s *Session) readLoop(ctx context.Context) {
	for {
		data, err := readText(ctx, s.conn)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				s.end(endNormal, websocket.StatusNormalClosure, "")
			} else {
				s.end(endDrop, websocket.StatusGoingAway, "")
			}
			return
		}
		f, err := protocol.Decode(data)
		if errors.Is(err, protocol.ErrInvalidUTF8) {
			s.end(endDrop, websocket.StatusInvalidFramePayloadData, "invalid UTF-8")
			return
		}
		if err != nil {
			s.hub.metrics.MessagesRejected.WithLabelValues("parse_or_handler").Inc()
			continue
		}
		s.handle(ctx, f)
		if s.isClosed() {
			return
		}
	}
}

// finish settles the presence after the socket is gone.
func (s *Session) finish(ctx context.Context) {
	s.end(endDrop, websocket.StatusGoingAway, "")
	h := s.hub
	defer h.releaseSocket() // the socket's slot in MAX_CONNECTIONS_PER_INSTANCE (ServeHTTP handed it over)
	// Counted before the session leaves the registry: a drain that sees the registry empty
	// then waits for these writes (WaitFinished) before the pool closes under them.
	h.finishing.Add(1)
	defer h.finishing.Done()
	h.unregister(s)
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pid := s.presenceID
	// disconnect puts the presence in its grace window (then the end job ends it).
	disconnect := func(ctx context.Context) {
		if _, err := h.q.DisconnectPresence(ctx, db.DisconnectPresenceParams{ID: pid, Epoch: s.epoch}); err != nil {
			h.log.Warn("disconnect presence", "presence", pid, "err", err)
		}
	}
	switch kind := s.endKind.Load(); kind {
	case endReplaced:
		// The presence belongs to the new socket now.
	case endNormal, endRevoked, endKicked:
		reason := map[int32]string{endNormal: "closed", endRevoked: "revoked", endKicked: "kicked"}[kind]
		if err := h.EndPresence(fctx, pid, s.epoch, reason); err != nil {
			// Not ended: the dropped socket's way, rather than stay live with no socket (with
			// a context of its own: the failure may have been fctx running out).
			h.log.Warn("end presence", "presence", pid, "err", err)
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer dcancel()
			disconnect(dctx)
		}
	default: // dropped, liveness, slow consumer, drain: keep the presence for the grace window
		disconnect(fctx)
	}
}

// EndPresence ends a presence (if epoch still owns it): peer state saved, deliveries
// addressed to its session rerouted to its member, peer_left announced and audited. The
// grace-expiry job calls it through jobs.Presences.
func (h *Hub) EndPresence(ctx context.Context, presenceID string, epoch int64, reason string) error {
	ended, ok, err := presence.End(ctx, h.pool, presenceID, epoch, reason)
	if err != nil || !ok {
		return err
	}
	h.systemPush(ctx, ended.MeshID, ended.MemberID, "peer_left", map[string]any{"name": ended.Name, "pubkey": ended.Pubkey})
	return nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
