// Package delivery is the write half of messaging: it turns an accepted send into rows —
// the envelope, one delivery per recipient, the audit entry — in one transaction, commits,
// and publishes a wake-up for the recipients so whichever instance holds them claims and
// pushes (internal/session). Nothing is acknowledged before it is stored, and nothing is
// delivered by an in-process shortcut: a DM between two sockets of one instance takes the
// same path as one across instances.
//
// A Router is safe for concurrent use.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// Sender identifies who sends.
type Sender struct {
	MeshID        string
	MemberID      string
	MemberPubkey  string
	DisplayName   string
	PresenceID    string
	SessionPubkey string // "" when the session has no key of its own
}

// Request is one send.
type Request struct {
	TargetSpec      string
	Priority        string
	Nonce           string
	Ciphertext      string
	ClientMessageID string
}

// Outcome is what the sender is acked with.
type Outcome struct {
	MessageID string
	Queued    bool
	Reason    string // metric reason when refused: no_recipient, too_large, …; "grant" for a grant block
	Error     string // the ack's error text when refused
	Duplicate bool   // a retried clientMessageId: the stored message's id is returned
}

// Error texts of refused sends, as the original's acks carried them.
const (
	ErrTextNoRecipient = "no connected peer for target (not online, or targetSpec is your own key without another session)"
	ErrTextGrantDM     = "blocked by recipient grants (sender lacks dm capability)"
)

// DefaultCaps are the capabilities a recipient grants a sender it has no entry for.
var DefaultCaps = []string{"read", "dm", "broadcast", "state-read"}

// Router stores sends.
type Router struct {
	pool     *pgxpool.Pool
	queueTTL time.Duration
	// OnGrantDrop is called for each recipient a grant blocked (cap "dm" or "broadcast").
	OnGrantDrop func(cap string)
}

// NewRouter builds a Router. queueTTL is how long an undelivered message waits.
func NewRouter(pool *pgxpool.Pool, queueTTL time.Duration) *Router {
	return &Router{pool: pool, queueTTL: queueTTL, OnGrantDrop: func(string) {}}
}

type recipient struct {
	memberID   string
	presenceID string // "" = any session of the member
}

// Send validates the target, stores the message with its deliveries and audit entry, and
// wakes the recipients. A refusal is an Outcome with Queued false; an error is a failure
// to store (the caller answers it without claiming the message was queued).
func (r *Router) Send(ctx context.Context, s Sender, req Request) (Outcome, error) {
	kind := TargetKind(req.TargetSpec)
	if kind == "" {
		return Outcome{Reason: "no_recipient", Error: ErrTextNoRecipient}, nil
	}
	var out Outcome
	var wakeP, wakeM []string
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		if req.ClientMessageID != "" {
			id, err := q.GetMessageByClientID(ctx, db.GetMessageByClientIDParams{SenderMemberID: s.MemberID, ClientMessageID: &req.ClientMessageID})
			if err == nil {
				out = Outcome{MessageID: id, Queued: true, Duplicate: true}
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("look up clientMessageId: %w", err)
			}
		}
		recips, refusal, err := r.recipients(ctx, q, s, req, kind)
		if err != nil {
			return err
		}
		if refusal != nil {
			out = *refusal
			return nil
		}
		now := time.Now()
		expires := now.Add(r.queueTTL)
		msgID := ids.New()
		var clientID, sessKey *string
		if req.ClientMessageID != "" {
			clientID = &req.ClientMessageID
		}
		if s.SessionPubkey != "" {
			sessKey = &s.SessionPubkey
		}
		storedKind := kind
		if kind == "direct" {
			storedKind = "member"
			if len(recips) == 1 && recips[0].presenceID != "" {
				storedKind = "session"
			}
		}
		n, err := q.InsertMessage(ctx, db.InsertMessageParams{
			ID: msgID, MeshID: s.MeshID, SenderMemberID: s.MemberID, SenderPresenceID: &s.PresenceID,
			SenderSessionPubkey: sessKey, TargetSpec: req.TargetSpec, TargetKind: storedKind,
			Priority: req.Priority, Nonce: req.Nonce, Ciphertext: req.Ciphertext, ClientMessageID: clientID, ExpiresAt: expires,
		})
		if err != nil {
			return fmt.Errorf("insert message: %w", err)
		}
		if n == 0 { // a concurrent retry with the same clientMessageId won
			id, err := q.GetMessageByClientID(ctx, db.GetMessageByClientIDParams{SenderMemberID: s.MemberID, ClientMessageID: clientID})
			if err != nil {
				return fmt.Errorf("look up clientMessageId: %w", err)
			}
			out = Outcome{MessageID: id, Queued: true, Duplicate: true}
			return nil
		}
		if len(recips) > 0 {
			p := db.InsertDeliveriesParams{MessageID: msgID, MeshID: s.MeshID, ExpiresAt: expires, Priority: req.Priority}
			if kind == "broadcast" || kind == "group" {
				p.Priority = "now" // multicast is never held by priority gating
			}
			for _, rc := range recips {
				p.MemberIds = append(p.MemberIds, rc.memberID)
				p.PresenceIds = append(p.PresenceIds, rc.presenceID)
				if rc.presenceID != "" {
					wakeP = append(wakeP, rc.presenceID)
				} else {
					wakeM = append(wakeM, rc.memberID)
				}
			}
			if err := q.InsertDeliveries(ctx, p); err != nil {
				return fmt.Errorf("insert deliveries: %w", err)
			}
		}
		if err := audit.Append(ctx, q, []audit.Event{{
			MeshID: s.MeshID, Type: "message_sent", ActorID: s.MemberID, ActorName: s.DisplayName,
			Payload: map[string]any{"targetSpec": req.TargetSpec, "priority": req.Priority},
		}}, now); err != nil {
			return err
		}
		for _, payload := range notifier.WakePayloads(wakeP, wakeM) {
			if err := q.Notify(ctx, db.NotifyParams{Channel: notifier.Channel, Payload: payload}); err != nil {
				return fmt.Errorf("notify: %w", err)
			}
		}
		out = Outcome{MessageID: msgID, Queued: true}
		return nil
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("store send: %w", err)
	}
	return out, nil
}

// TargetKind classifies a targetSpec: "direct" for 64 hex characters, "broadcast" for * and
// @all, "group" for @name, "" for anything else (refused: it could never be delivered).
func TargetKind(spec string) string {
	switch {
	case spec == "*" || spec == "@all":
		return "broadcast"
	case len(spec) > 1 && spec[0] == '@':
		return "group"
	case isHex64(spec):
		return "direct"
	}
	return ""
}

func (r *Router) recipients(ctx context.Context, q *db.Queries, s Sender, req Request, kind string) ([]recipient, *Outcome, error) {
	if kind == "direct" {
		target := strings.ToLower(req.TargetSpec)
		rows, err := q.ResolveDirectTarget(ctx, db.ResolveDirectTargetParams{MeshID: s.MeshID, Target: &target})
		if err != nil {
			return nil, nil, fmt.Errorf("resolve target: %w", err)
		}
		if len(rows) == 0 {
			return nil, &Outcome{Reason: "no_recipient", Error: ErrTextNoRecipient}, nil
		}
		t := rows[0] // session beats member beats stale session
		if t.Kind == "session" && t.PresenceID == s.PresenceID {
			return nil, &Outcome{Reason: "no_recipient", Error: ErrTextNoRecipient}, nil
		}
		if !Allowed(t.PeerGrants, s.MemberPubkey, s.SessionPubkey, "dm") {
			r.OnGrantDrop("dm")
			return nil, &Outcome{Reason: "grant", Error: ErrTextGrantDM}, nil
		}
		rc := recipient{memberID: t.MemberID}
		if t.Kind == "session" {
			rc.presenceID = t.PresenceID
		}
		return []recipient{rc}, nil, nil
	}
	rows, err := q.MulticastRecipients(ctx, db.MulticastRecipientsParams{MeshID: s.MeshID, SenderMemberID: s.MemberID})
	if err != nil {
		return nil, nil, fmt.Errorf("multicast recipients: %w", err)
	}
	group := ""
	if kind == "group" && req.TargetSpec != "@all" {
		group = req.TargetSpec[1:]
	}
	var out []recipient
	for _, p := range rows {
		if group != "" && !InGroup(p.Groups, group) {
			continue
		}
		if !Allowed(p.PeerGrants, s.MemberPubkey, s.SessionPubkey, "broadcast") {
			r.OnGrantDrop("broadcast")
			continue
		}
		out = append(out, recipient{memberID: p.MemberID, presenceID: p.ID})
	}
	return out, nil, nil
}

// Allowed applies a recipient's grants (reference §5.1): an entry under the sender's member
// key decides (an empty list blocks); else an entry under its session key; else defaults.
func Allowed(grantsJSON []byte, senderMemberPubkey, senderSessionPubkey, capability string) bool {
	var grants map[string][]string
	if len(grantsJSON) > 0 {
		if err := json.Unmarshal(grantsJSON, &grants); err != nil {
			grants = nil // unreadable grants fall back to the defaults, as an absent entry would
		}
	}
	caps, ok := grants[senderMemberPubkey]
	if !ok && senderSessionPubkey != "" {
		caps, ok = grants[senderSessionPubkey]
	}
	if !ok {
		caps = DefaultCaps
	}
	for _, c := range caps {
		if c == capability {
			return true
		}
	}
	return false
}

// InGroup reports whether a presence's groups (JSON [{name, role?}]) put it in group g:
// a member of a/b/c is in @a/b/c, @a/b and @a.
func InGroup(groupsJSON []byte, g string) bool {
	var groups []struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(groupsJSON, &groups) != nil {
		return false
	}
	for _, gr := range groups {
		if gr.Name == g || strings.HasPrefix(gr.Name, g+"/") {
			return true
		}
	}
	return false
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
