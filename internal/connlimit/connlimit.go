// Package connlimit keeps the broker inside its open-file limit: it raises the process's
// soft RLIMIT_NOFILE to the hard limit at start, and wraps the listener so that the
// connections it holds never exceed a budget below that limit. A connection over the budget
// is accepted and closed at once (rather than left in the kernel's backlog, or failing
// accept with EMFILE, which starves the database pool and the LISTEN connection of the
// descriptors they need to reconnect).
//
// Plain HTTP connections (not hijacked into WebSockets, which have caps of their own) are
// also capped per peer IP, and while the budget is three quarters spent, connections that
// sit between requests — kept alive, or never sending one — are closed to make room: holding
// descriptors with idle connections costs an attacker nothing, serving requests does.
// The http.Server must report its connection states to Listener.ConnState.
//
// A Listener is safe for concurrent use.
package connlimit

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Reserve is how many descriptors are kept for everything but client connections: the
// database pools, the LISTEN connection, the metrics and pprof listeners, files and pipes.
const Reserve = 256

// Why a connection was closed by the Listener (its refused callback's argument).
const (
	ReasonBudget = "fd_budget"         // over the descriptor budget
	ReasonPerIP  = "http_conns_per_ip" // the peer IP holds its share of plain connections
	ReasonReaped = "idle_closed"       // sat between requests while the budget was short
	reapAfter    = time.Second         // how long a connection may sit idle before it may be reaped
	reapPerPass  = 32                  // idle connections closed per pass under pressure
	reapEvery    = 20 * time.Millisecond
)

// RaiseOpenFileLimit sets the soft open-file limit to the hard one and returns both as
// they are afterwards.
func RaiseOpenFileLimit() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, err
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		}
	}
	return uint64(lim.Cur), uint64(lim.Max), nil
}

// Budget is the number of client connections that fit in an open-file limit.
func Budget(softLimit uint64) int {
	if softLimit <= 2*Reserve {
		return int(softLimit / 2)
	}
	return int(softLimit - Reserve)
}

// Listener caps the connections accepted through it that are still open.
type Listener struct {
	net.Listener
	max      int64
	perIP    int
	open     atomic.Int64
	refused  func(reason string) // called for each connection the Listener closes
	lastReap atomic.Int64        // unix nanos of the last reaping pass

	mu      sync.Mutex
	byIP    map[string]int      // plain connections per peer IP; guarded by mu
	waiting map[*conn]time.Time // connections between requests, since when; guarded by mu
}

// Wrap caps l at max open connections and, when perIP > 0, at perIP plain HTTP connections
// per peer IP; refused (may be nil) is told of each connection closed and why.
func Wrap(l net.Listener, max, perIP int, refused func(reason string)) *Listener {
	if refused == nil {
		refused = func(string) {}
	}
	return &Listener{Listener: l, max: int64(max), perIP: perIP, refused: refused,
		byIP: map[string]int{}, waiting: map[*conn]time.Time{}}
}

// Accept returns the next connection within the budget, closing those over it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Load() >= l.max*3/4 {
			l.reap() // before the budget check: a full budget of idle connections makes room
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = nc.Close()
			l.refused(ReasonBudget)
			continue
		}
		c := &conn{Conn: nc, l: l, ip: peerIP(nc)}
		l.mu.Lock()
		if l.perIP > 0 && l.byIP[c.ip] >= l.perIP {
			l.mu.Unlock()
			l.open.Add(-1)
			_ = nc.Close()
			l.refused(ReasonPerIP)
			continue
		}
		l.byIP[c.ip]++
		c.plain = true
		l.mu.Unlock()
		return c, nil
	}
}

// reap closes connections that have sat between requests for a while, at most
// reapPerPass of them and one pass per reapEvery (a pass walks the waiting set).
func (l *Listener) reap() {
	now := time.Now()
	if last := l.lastReap.Load(); now.UnixNano()-last < int64(reapEvery) || !l.lastReap.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	cut := now.Add(-reapAfter)
	var victims []*conn
	l.mu.Lock()
	for c, since := range l.waiting {
		if since.Before(cut) {
			victims = append(victims, c)
			delete(l.waiting, c)
			if len(victims) == reapPerPass {
				break
			}
		}
	}
	l.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
		l.refused(ReasonReaped)
	}
}

// ConnState is the http.Server's ConnState hook: it tracks which connections wait between
// requests and which were hijacked (no longer plain HTTP).
func (l *Listener) ConnState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew, http.StateIdle:
		l.waiting[c] = time.Now()
	case http.StateActive:
		delete(l.waiting, c)
	case http.StateHijacked:
		delete(l.waiting, c)
		l.unplainLocked(c)
	case http.StateClosed:
		delete(l.waiting, c)
	}
}

func (l *Listener) unplainLocked(c *conn) {
	if !c.plain {
		return
	}
	c.plain = false
	if l.byIP[c.ip] <= 1 {
		delete(l.byIP, c.ip)
	} else {
		l.byIP[c.ip]--
	}
}

// Open is how many accepted connections are still open.
func (l *Listener) Open() int64 { return l.open.Load() }

// peerIP keys a connection's peer as the per-IP limits of the session layer do: an IPv4
// address, or an IPv6 address's /64 (the block one host gets).
func peerIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		host = c.RemoteAddr().String()
	}
	return IPKey(host)
}

// IPKey is the key of an address in per-IP limits: the IPv4 address, or the IPv6 /64.
func IPKey(host string) string {
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// conn gives its slot back when closed (once, however often Close is called; a hijacked
// connection is closed through this wrapper too).
type conn struct {
	net.Conn
	l     *Listener
	ip    string
	plain bool // counted in l.byIP; guarded by l.mu
	once  sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.waiting, c)
		c.l.unplainLocked(c)
		c.l.mu.Unlock()
		c.l.open.Add(-1)
	})
	return err
}
