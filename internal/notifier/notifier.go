// Package notifier carries wake-ups between broker instances over Postgres LISTEN/NOTIFY:
// one dedicated connection per process listens on one channel and dispatches each
// notification to a handler; any instance publishes with pg_notify.
//
// Notifications are hints. A lost one delays delivery until the next poll but never loses a
// message, because the rows are the truth. After every (re)connect the listener calls
// OnConnected, so the owner can resync (poll everything it holds) for notifications it may
// have missed while disconnected. Connected reports the listener's state for readiness.
//
// Wire format: "w <tokens…>" where tokens are p:<presenceID> (that presence has work) and
// m:<memberID> (that member has work) and l:<meshID> (that mesh's log has new entries:
// every local presence of the mesh reads it); "k <presenceID> <epoch>" (close sockets of the
// presence older than epoch: a takeover); "r <memberID>" (the member was revoked: close its
// sockets and end their presences); "x <presenceID>" (the session was kicked: close it 4001
// and end its presence); "a <meshID>" (the mesh was archived: close its sockets); "s <json>"
// (a system event to fan out).
package notifier

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Channel is the one LISTEN channel all instances share.
const Channel = "meshbroker"

// maxPayload keeps a notification under Postgres' 8000-byte limit.
const maxPayload = 7900

// Handler receives notifications. Methods are called from the listener goroutine, one at a
// time, and must not block for long.
type Handler interface {
	OnWake(presenceIDs, memberIDs []string)
	OnLogWake(meshIDs []string)
	OnKick(presenceID string, epoch int64)
	OnRevoke(memberID string)
	OnKickSession(presenceID string)
	OnMeshArchived(meshID string)
	OnSystem(payload []byte)
	OnConnected()
}

// Listener owns the LISTEN connection.
type Listener struct {
	url       string
	h         Handler
	log       *slog.Logger
	connected atomic.Bool

	// listen and after are listenOnce and time.After (a test replaces them).
	listen func(ctx context.Context) (established bool, err error)
	after  func(time.Duration) <-chan time.Time
}

// Reconnect backoff: the first retry after a connection that was established waits
// minBackoff; each further failure in a row doubles it, up to maxBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// NewListener builds a listener for databaseURL.
func NewListener(databaseURL string, h Handler, log *slog.Logger) *Listener {
	l := &Listener{url: databaseURL, h: h, log: log, after: time.After}
	l.listen = l.listenOnce
	return l
}

// Connected reports whether the listener currently holds a LISTEN connection.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Run listens until ctx ends, reconnecting with backoff: 100 ms after a connection that
// was established (a database restart), doubling to 5 s while reconnecting keeps failing.
// The backoff starts again at 100 ms after every successful reconnect, so each restart of
// the database costs the wake-ups of about 100 ms, not the backoff the previous outage
// reached.
func (l *Listener) Run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		established, err := l.listen(ctx)
		l.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if established {
			backoff = minBackoff
		}
		l.log.Warn("notification listener disconnected; reconnecting", "err", err, "in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-l.after(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// listenOnce holds one LISTEN connection until it fails; established reports whether it
// got as far as listening.
func (l *Listener) listenOnce(ctx context.Context) (established bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.Connect(cctx, l.url)
	cancel()
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, err
	}
	l.connected.Store(true)
	// LISTEN first, then resync: whatever was published before this point is picked up by
	// the owner's poll; whatever comes after arrives here.
	l.h.OnConnected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		l.dispatch(n.Payload)
	}
}

func (l *Listener) dispatch(payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	switch kind {
	case "w":
		var ps, ms, ls []string
		for _, tok := range strings.Fields(rest) {
			switch {
			case strings.HasPrefix(tok, "p:"):
				ps = append(ps, tok[2:])
			case strings.HasPrefix(tok, "m:"):
				ms = append(ms, tok[2:])
			case strings.HasPrefix(tok, "l:"):
				ls = append(ls, tok[2:])
			}
		}
		if len(ps)+len(ms) > 0 {
			l.h.OnWake(ps, ms)
		}
		if len(ls) > 0 {
			l.h.OnLogWake(ls)
		}
	case "k":
		id, epochStr, _ := strings.Cut(rest, " ")
		epoch, err := strconv.ParseInt(epochStr, 10, 64)
		if err != nil || epoch < 0 {
			return
		}
		l.h.OnKick(id, epoch)
	case "r":
		if rest != "" {
			l.h.OnRevoke(rest)
		}
	case "x":
		if rest != "" {
			l.h.OnKickSession(rest)
		}
	case "a":
		if rest != "" {
			l.h.OnMeshArchived(rest)
		}
	case "s":
		l.h.OnSystem([]byte(rest))
	default:
		l.log.Debug("ignoring unknown notification", "payload_prefix", kind)
	}
}

// WakePayloads encodes wake tokens into as few notification payloads as fit: presences and
// members with new deliveries, and meshes with new log entries (one token per mesh, however
// many recipients the entries have).
func WakePayloads(presenceIDs, memberIDs, meshIDs []string) []string {
	var out []string
	var b strings.Builder
	add := func(tok string) {
		if b.Len() > 0 && b.Len()+1+len(tok) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString("w")
		}
		b.WriteByte(' ')
		b.WriteString(tok)
	}
	for _, p := range presenceIDs {
		add("p:" + p)
	}
	for _, m := range memberIDs {
		add("m:" + m)
	}
	for _, m := range meshIDs {
		add("l:" + m)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// KickPayload encodes a takeover: sockets of presenceID older than epoch must close.
func KickPayload(presenceID string, epoch int64) string {
	return "k " + presenceID + " " + strconv.FormatInt(epoch, 10)
}

// RevokePayload encodes a revocation: memberID's sockets must close, on every instance.
func RevokePayload(memberID string) string { return "r " + memberID }

// KickSessionPayload encodes a kick of one session: it closes 4001 kicked, on every instance.
func KickSessionPayload(presenceID string) string { return "x " + presenceID }

// MeshArchivedPayload encodes an archived mesh: its sockets close, on every instance.
func MeshArchivedPayload(meshID string) string { return "a " + meshID }

// SystemPayload encodes a system event (JSON) for fan-out; ok=false if it is too large.
func SystemPayload(event []byte) (string, bool) {
	if len(event)+2 > maxPayload {
		return "", false
	}
	return "s " + string(event), true
}
