// Package corkconn gives a WebSocket library a hijacked connection that (1) can be corked,
// so that a socket's queued frames leave in one write system call instead of one each, and
// (2) keeps small buffers, so that an idle socket costs little memory.
//
// Why: coder/websocket flushes its buffered writer after every message, and on this
// loopback-heavy workload each write is a system call plus a TCP segment that wakes the
// reader — the largest item in the broker's CPU profile. The library offers no batching, but
// it writes through whatever net.Conn and bufio.Writer the http.Hijacker hands it. Wrapping
// the ResponseWriter lets the broker hand it a Conn whose writes are appended to a pooled
// buffer while corked and sent by Uncork in one call. net/http's own hijack buffers (4 KiB
// each, held for the socket's lifetime) are replaced by smaller ones.
package corkconn

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

const (
	// ReadBufferSize: a frame header and a typical small frame fit; larger payloads are read
	// straight into the library's message buffer, so a bigger buffer would only save system
	// calls on sockets that pipeline many small frames.
	ReadBufferSize = 1024
	// WriteBufferSize: control frames (close, pong) fit whole, so an uncorked write is one
	// system call; message frames are written while corked, where the size does not matter.
	WriteBufferSize = 256
	// poolMax: cork buffers that grew beyond this are dropped rather than pooled.
	poolMax = 256 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Conn is a hijacked connection with a cork. Safe for concurrent use: writes are serialised.
type Conn struct {
	net.Conn
	leftover []byte // bytes the HTTP server had read past the upgrade request; read first

	mu     sync.Mutex // serialises writes and guards corked, out, closedCorked
	corked bool
	out    *[]byte // pooled buffer of corked writes
	// closedCorked: Close ran while corked. Whether its flush reached the peer is unknown,
	// so the Uncork that follows reports an error and nothing is counted as delivered.
	closedCorked bool
}

// Read returns what the HTTP server had buffered past the request first, then reads the
// connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.leftover) > 0 {
		n := copy(p, c.leftover)
		c.leftover = c.leftover[n:]
		if len(c.leftover) == 0 {
			c.leftover = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Write appends to the cork buffer while corked and writes through otherwise.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		*c.out = append(*c.out, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Cork starts collecting writes. Corking a corked Conn is a no-op.
func (c *Conn) Cork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		return
	}
	c.corked = true
	c.out = bufPool.Get().(*[]byte)
}

// Uncork writes everything collected since Cork in one call, within timeout, and stops
// collecting. The error is the write's: on error the bytes are lost and the caller should
// treat the socket as broken.
func (c *Conn) Uncork(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		if c.closedCorked {
			return errors.New("uncork: connection closed while corked")
		}
		return nil
	}
	c.corked = false
	buf := c.out
	c.out = nil
	defer func() {
		if cap(*buf) <= poolMax {
			*buf = (*buf)[:0]
			bufPool.Put(buf)
		}
	}()
	if len(*buf) == 0 {
		return nil
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("uncork: set deadline: %w", err)
	}
	_, err := c.Conn.Write(*buf)
	_ = c.Conn.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("uncork: write %d bytes: %w", len(*buf), err)
	}
	return nil
}

// Close sends what is corked first (best effort, within a second), then closes. The library
// closes the connection right after echoing a peer's close frame, which may be written
// while a drain round holds the cork; without this the echo would be lost and the peer see
// an abnormal closure.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.corked {
		c.corked, c.closedCorked = false, true
		if buf := c.out; len(*buf) > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Conn.Write(*buf)
		}
		c.out = nil
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// ResponseWriter wraps w so that a WebSocket library hijacking it gets a *Conn with small
// buffers. After a successful hijack, Conn returns it.
type ResponseWriter struct {
	http.ResponseWriter
	conn *Conn
}

// Wrap returns w wrapped.
func Wrap(w http.ResponseWriter) *ResponseWriter { return &ResponseWriter{ResponseWriter: w} }

// Unwrap lets http.ResponseController and libraries reach the original writer.
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Conn is the hijacked connection, nil before Hijack.
func (w *ResponseWriter) Conn() *Conn { return w.conn }

// Hijack takes the connection over from the HTTP server. The server's 4 KiB buffers are let
// go; whatever its reader had already buffered is read first from the returned Conn.
func (w *ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("corkconn: %T does not support hijacking", w.ResponseWriter)
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Writer.Buffered() > 0 { // the server's response head, if it was not flushed yet
		if err := brw.Writer.Flush(); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("corkconn: flush response head: %w", err)
		}
	}
	c := &Conn{Conn: nc}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		c.leftover = append([]byte(nil), b...)
	}
	w.conn = c
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, ReadBufferSize), bufio.NewWriterSize(c, WriteBufferSize)), nil
}
