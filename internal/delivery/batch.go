package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// Batching: concurrent sends are grouped into one transaction (up to maxBatch of them),
// because a commit — and the audit chain's per-mesh lock held through it, and the NOTIFY
// that serialises notifying commits cluster-wide — is the expensive part, not the rows.
// There is no timer: while a batch commits, the next one accumulates, so a lone send goes
// out at once and a busy broker sends large batches.
//
// Several batches are in flight at once, one per worker, and a sender's sends always go to
// the same worker (chosen by its presence id): so each session's sends commit in order (a
// later send can never commit before an earlier one) while different sessions' batches
// overlap their round trips. Audit entries are enqueued, not chained, in the batch, so
// batches of one mesh do not serialise on the audit chain's lock.
const (
	maxBatch     = 1024
	batchWorkers = 4
)

// Router stores sends.
type Router struct {
	pool     *pgxpool.Pool
	queueTTL time.Duration
	// OnGrantDrop is called for each recipient a grant blocked (cap "dm" or "broadcast").
	// Set it before the first Send.
	OnGrantDrop func(cap string)
	// OnBatch, when set, observes each committed batch: its size and how long storing it took.
	OnBatch func(n int, took time.Duration)
	// OnAudited, when set, is told the meshes whose audit events a committed batch enqueued
	// (the chainer links them next).
	OnAudited func(meshIDs ...string)

	reqs      [batchWorkers]chan *pending
	quit      chan struct{}
	closeOnce sync.Once
}

type pending struct {
	ctx  context.Context
	s    Sender
	req  Request
	kind string
	out  Outcome
	err  error
	cb   func(Outcome, error) // called once, in submission order within a batch
}

func (p *pending) finish() { p.cb(p.out, p.err) }

// NewRouter builds a Router and starts its batching loop; Close stops it.
func NewRouter(pool *pgxpool.Pool, queueTTL time.Duration) *Router {
	r := &Router{pool: pool, queueTTL: queueTTL, OnGrantDrop: func(string) {}, quit: make(chan struct{})}
	for i := range r.reqs {
		r.reqs[i] = make(chan *pending, 2*maxBatch)
		go r.worker(r.reqs[i])
	}
	return r
}

// Close stops the batching loop; later Sends fail.
func (r *Router) Close() { r.closeOnce.Do(func() { close(r.quit) }) }

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("router closed")

// Send validates the target, stores the message with its deliveries and audit entry (in a
// batch with concurrent sends), and wakes the recipients. A refusal is an Outcome with
// Queued false; an error is a failure to store (the caller must not claim it was queued).
func (r *Router) Send(ctx context.Context, s Sender, req Request) (Outcome, error) {
	type result struct {
		out Outcome
		err error
	}
	ch := make(chan result, 1)
	r.SendAsync(ctx, s, req, func(o Outcome, err error) { ch <- result{o, err} })
	res := <-ch // always answered: the batch finishes or fails as a whole
	return res.out, res.err
}

// SendAsync is Send without waiting: cb receives the outcome, exactly once. Sends submitted
// by one goroutine are stored, and their callbacks run, in submission order, so a session
// can pipeline its sends and still ack them in order. cb must not block.
func (r *Router) SendAsync(ctx context.Context, s Sender, req Request, cb func(Outcome, error)) {
	kind := TargetKind(req.TargetSpec)
	if kind == "" {
		cb(Outcome{Reason: "no_recipient", Error: ErrTextNoRecipient}, nil)
		return
	}
	p := &pending{ctx: ctx, s: s, req: req, kind: kind, cb: cb}
	select {
	case r.reqs[workerFor(s.PresenceID)] <- p:
	case <-ctx.Done():
		cb(Outcome{}, ctx.Err())
	case <-r.quit:
		cb(Outcome{}, ErrClosed)
	}
}

// workerFor picks a sender's worker (FNV-1a of its presence id).
func workerFor(presenceID string) int {
	var h uint32 = 2166136261
	for i := 0; i < len(presenceID); i++ {
		h ^= uint32(presenceID[i])
		h *= 16777619
	}
	return int(h % batchWorkers)
}

// worker stores batches from its queue, one at a time: whatever queued up while the previous
// batch committed becomes the next batch.
func (r *Router) worker(reqs chan *pending) {
	for {
		var batch []*pending
		select {
		case p := <-reqs:
			batch = append(batch, p)
		case <-r.quit:
			return
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case p := <-reqs:
				batch = append(batch, p)
			default:
				break gather
			}
		}
		r.run(batch)
	}
}

// run stores a batch; if the batch transaction fails, each send is retried alone so that
// one bad send cannot fail its neighbours.
func (r *Router) run(batch []*pending) {
	live := batch[:0]
	for _, p := range batch {
		if p.ctx.Err() != nil {
			p.err = p.ctx.Err()
			p.finish()
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	// Optimistically, without looking up clientMessageIds first (a duplicate makes the
	// statement fail as a whole): a retry is rare, the lookup's round trip would be on every
	// send. When the server refused a statement (a duplicate clientMessageId, text Postgres
	// cannot store, a member deleted meanwhile), nothing of the batch was stored, and each
	// send is stored alone, with the lookup, so one bad send cannot fail its neighbours. Any
	// other error (connection lost, deadline) leaves unknown whether the batch committed: it
	// is reported, not retried, and a client that retries with its clientMessageId is
	// deduplicated.
	err := r.store(ctx, live, false)
	var refused *pgconn.PgError
	if errors.As(err, &refused) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, p := range live {
			p.out, p.err = Outcome{}, nil
			if e := r.store(ctx, []*pending{p}, true); e != nil {
				p.out, p.err = Outcome{}, fmt.Errorf("store send: %w", e)
			}
			p.finish()
		}
		return
	}
	for _, p := range live {
		if err != nil {
			p.out, p.err = Outcome{}, fmt.Errorf("store send: %w", err)
		}
		p.finish()
	}
	if err == nil && r.OnBatch != nil {
		r.OnBatch(len(live), time.Since(start))
	}
}

type recipient struct {
	memberID   string
	presenceID string // "" = any session of the member
}

type clientKey struct{ sender, clientID string }

// store stores one batch and sets each pending's outcome. It reads (target resolution,
// multicast scopes) and then writes everything with one statement (StoreBatch), which is
// atomic by itself: no explicit transaction, so a batch costs two or three round trips.
// lookupExisting checks for already-stored clientMessageIds first; the first attempt skips it (a
// duplicate makes StoreBatch fail, and run() then stores each send alone, with the check).
func (r *Router) store(ctx context.Context, batch []*pending, lookupExisting bool) error {
	q := db.New(r.pool)
	for _, p := range batch {
		p.out = Outcome{}
	}
	todo := batch
	if lookupExisting {
		var ks, kc []string
		for _, p := range batch {
			if p.req.ClientMessageID != "" {
				ks, kc = append(ks, p.s.MemberID), append(kc, p.req.ClientMessageID)
			}
		}
		if len(ks) > 0 {
			rows, err := q.ExistingClientMessages(ctx, db.ExistingClientMessagesParams{SenderMemberIds: ks, ClientMessageIds: kc})
			if err != nil {
				return fmt.Errorf("look up clientMessageIds: %w", err)
			}
			existing := map[clientKey]string{}
			for _, row := range rows {
				existing[clientKey{row.SenderMemberID, row.ClientMessageID}] = row.ID
			}
			todo = make([]*pending, 0, len(batch))
			for _, p := range batch {
				if id, ok := existing[clientKey{p.s.MemberID, p.req.ClientMessageID}]; ok && p.req.ClientMessageID != "" {
					p.out = Outcome{MessageID: id, Queued: true, Duplicate: true}
					continue
				}
				todo = append(todo, p)
			}
		}
	}

	recips, err := r.resolve(ctx, q, todo)
	if err != nil {
		return err
	}

	// Build the rows. Two sends in this batch with the same clientMessageId store one
	// message; both are acked with its id.
	now := time.Now()
	expires := now.Add(r.queueTTL)
	sp := db.StoreBatchParams{}
	firstByKey := map[clientKey]*pending{}
	sameAs := map[*pending]*pending{}
	var wakeP, wakeM, wakeL []string
	for _, p := range todo {
		rcs, ok := recips[p]
		if !ok {
			continue // refused
		}
		if p.req.ClientMessageID != "" {
			k := clientKey{p.s.MemberID, p.req.ClientMessageID}
			if first, ok := firstByKey[k]; ok {
				sameAs[p] = first
				continue
			}
			firstByKey[k] = p
		}
		p.out = Outcome{MessageID: ids.NewTimeOrdered(), Queued: true}
		storedKind := p.kind
		if p.kind == "direct" {
			storedKind = "member"
			if len(rcs) == 1 && rcs[0].presenceID != "" {
				storedKind = "session"
			}
		}
		logged := p.kind == "broadcast" || p.kind == "group"
		sp.Ids = append(sp.Ids, p.out.MessageID)
		sp.MeshIds = append(sp.MeshIds, p.s.MeshID)
		sp.Logged = append(sp.Logged, logged)
		sp.SenderMemberIds = append(sp.SenderMemberIds, p.s.MemberID)
		sp.SenderPresenceIds = append(sp.SenderPresenceIds, p.s.PresenceID)
		sp.SenderSessionPubkeys = append(sp.SenderSessionPubkeys, p.s.SessionPubkey)
		sp.SenderMemberPubkeys = append(sp.SenderMemberPubkeys, p.s.MemberPubkey)
		sp.SenderNames = append(sp.SenderNames, p.s.DisplayName)
		sp.TargetSpecs = append(sp.TargetSpecs, p.req.TargetSpec)
		sp.TargetKinds = append(sp.TargetKinds, storedKind)
		sp.Priorities = append(sp.Priorities, p.req.Priority)
		sp.Nonces = append(sp.Nonces, p.req.Nonce)
		sp.Ciphertexts = append(sp.Ciphertexts, p.req.Ciphertext)
		sp.ClientMessageIds = append(sp.ClientMessageIds, p.req.ClientMessageID)
		sp.ExpiresAts = append(sp.ExpiresAts, expires)
		if logged {
			// One log entry; its recipients are decided when each of them reads the log.
			wakeL = append(wakeL, p.s.MeshID)
			continue
		}
		for _, rc := range rcs {
			sp.DMessageIds = append(sp.DMessageIds, p.out.MessageID)
			sp.DMeshIds = append(sp.DMeshIds, p.s.MeshID)
			sp.DMemberIds = append(sp.DMemberIds, rc.memberID)
			sp.DPresenceIds = append(sp.DPresenceIds, rc.presenceID)
			sp.DPriorities = append(sp.DPriorities, p.req.Priority)
			sp.DExpiresAts = append(sp.DExpiresAts, expires)
			if rc.presenceID != "" {
				wakeP = append(wakeP, rc.presenceID)
			} else {
				wakeM = append(wakeM, rc.memberID)
			}
		}
	}
	if len(sp.Ids) == 0 {
		return nil
	}
	// Each message's message_sent audit event is appended to its mesh's chain by the chainer,
	// from the message row itself (StoreBatch records the storing transaction for it), so
	// concurrent batches never queue on the chain's lock and write no audit row.
	sp.Audited = true
	inserted, err := q.StoreBatch(ctx, sp)
	if err != nil {
		return fmt.Errorf("store batch: %w", err)
	}
	if len(inserted) != len(sp.Ids) {
		// Cannot happen (the statement inserts every row or fails); if it did, the batch is
		// committed, and this error (not a *pgconn.PgError) is not retried.
		return fmt.Errorf("store batch: %d of %d messages stored", len(inserted), len(sp.Ids))
	}
	if r.OnAudited != nil {
		r.OnAudited(dedupe(slices.Clone(sp.MeshIds))...)
	}
	for p, first := range sameAs {
		p.out = Outcome{MessageID: first.out.MessageID, Queued: true, Duplicate: true}
	}
	// Stored: the wake-up is a hint (the poll is the guarantee), so a failure here is logged
	// by the caller's metrics, not returned — the sends are acked as queued.
	if payloads := notifier.WakePayloads(dedupe(wakeP), dedupe(wakeM), dedupe(wakeL)); len(payloads) > 0 {
		_ = q.NotifyMany(ctx, db.NotifyManyParams{Channel: notifier.Channel, Payloads: payloads})
	}
	return nil
}

// resolve finds each send's recipients, setting the refusal outcome of those that have none;
// refused sends are absent from the result.
func (r *Router) resolve(ctx context.Context, q *db.Queries, todo []*pending) (map[*pending][]recipient, error) {
	// Direct targets: each distinct (mesh, target) once, all in one query.
	type targetKey struct{ mesh, target string }
	var dm, dt []string
	index := map[targetKey]int{}
	var directs []*pending
	for _, p := range todo {
		if p.kind != "direct" {
			continue
		}
		directs = append(directs, p)
		k := targetKey{p.s.MeshID, strings.ToLower(p.req.TargetSpec)}
		if _, ok := index[k]; !ok {
			index[k] = len(dm)
			dm, dt = append(dm, k.mesh), append(dt, k.target)
		}
	}
	resolved := map[int]db.ResolveDirectTargetsRow{}
	if len(dm) > 0 {
		rows, err := q.ResolveDirectTargets(ctx, db.ResolveDirectTargetsParams{MeshIds: dm, Targets: dt})
		if err != nil {
			return nil, fmt.Errorf("resolve targets: %w", err)
		}
		for _, row := range rows {
			resolved[int(row.Ord)-1] = row
		}
	}
	recips := make(map[*pending][]recipient, len(todo))
	for _, p := range directs {
		t, ok := resolved[index[targetKey{p.s.MeshID, strings.ToLower(p.req.TargetSpec)}]]
		switch {
		case !ok, t.Kind == "session" && t.PresenceID == p.s.PresenceID:
			p.out = Outcome{Reason: "no_recipient", Error: ErrTextNoRecipient}
		case !Allowed(t.PeerGrants, p.s.MemberPubkey, p.s.SessionPubkey, "dm"):
			r.OnGrantDrop("dm")
			p.out = Outcome{Reason: "grant", Error: ErrTextGrantDM}
		default:
			rc := recipient{memberID: t.MemberID}
			if t.Kind == "session" {
				rc.presenceID = t.PresenceID
			}
			recips[p] = []recipient{rc}
		}
	}

	// Broadcast and group messages go to the mesh's log whoever is in scope (nobody may be):
	// each recipient decides, when it reads the log, whether an entry is for it.
	for _, p := range todo {
		if p.kind != "direct" {
			recips[p] = nil
		}
	}
	return recips, nil
}

func dedupe(xs []string) []string {
	seen := make(map[string]struct{}, len(xs))
	out := xs[:0]
	for _, x := range xs {
		if _, ok := seen[x]; !ok {
			seen[x] = struct{}{}
			out = append(out, x)
		}
	}
	return out
}
