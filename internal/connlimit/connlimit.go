// Package connlimit keeps the broker inside its open-file limit: it raises the process's
// soft RLIMIT_NOFILE to the hard limit at start, and wraps the listener so that the
// connections it holds never exceed a budget below that limit. A connection over the budget
// is accepted and closed at once (rather than left in the kernel's backlog, or failing
// accept with EMFILE, which starves the database pool and the LISTEN connection of the
// descriptors they need to reconnect).
//
// A Listener is safe for concurrent use.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Reserve is how many descriptors are kept for everything but client connections: the
// database pools, the LISTEN connection, the metrics and pprof listeners, files and pipes.
const Reserve = 256

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
	max     int64
	open    atomic.Int64
	refused func() // called for each connection closed for being over the budget
}

// Wrap caps l at max open connections; refused (may be nil) counts the ones turned away.
func Wrap(l net.Listener, max int, refused func()) *Listener {
	if refused == nil {
		refused = func() {}
	}
	return &Listener{Listener: l, max: int64(max), refused: refused}
}

// Accept returns the next connection within the budget, closing those over it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.Close()
			l.refused()
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// Open is how many accepted connections are still open.
func (l *Listener) Open() int64 { return l.open.Load() }

// conn gives its slot back when closed (once, however often Close is called; a hijacked
// connection is closed through this wrapper too).
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}
