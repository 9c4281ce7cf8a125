package corkconn_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshbroker/meshbroker/internal/corkconn"
)

// countingListener counts the write system calls the server side makes.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, writes: l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestCorkedFramesLeaveInOneWrite: 50 frames written while corked reach the client intact
// and in order, through one write on the connection; uncorked frames still work.
func TestCorkedFramesLeaveInOneWrite(t *testing.T) {
	var writes atomic.Int64
	ready := make(chan int64, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := corkconn.Wrap(w)
		conn, err := websocket.Accept(cw, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		raw := cw.Conn()
		if raw == nil {
			t.Error("Conn() is nil after the hijack")
			return
		}
		ctx := context.Background()
		// The client's first frame may already sit in the server's buffer: it must be read.
		if _, data, err := conn.Read(ctx); err != nil || string(data) != "hello" {
			t.Errorf("read first frame: %q, %v", data, err)
			return
		}
		before := writes.Load()
		raw.Cork()
		for i := range 50 {
			if err := conn.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("frame %d %s", i, strings.Repeat("x", i*40)))); err != nil {
				t.Errorf("corked write: %v", err)
			}
		}
		if got := writes.Load() - before; got != 0 {
			t.Errorf("%d writes reached the connection while corked", got)
		}
		if err := raw.Uncork(time.Second); err != nil {
			t.Errorf("uncork: %v", err)
		}
		ready <- writes.Load() - before
		if err := conn.Write(ctx, websocket.MessageText, []byte("uncorked")); err != nil {
			t.Errorf("uncorked write: %v", err)
		}
		_, _, _ = conn.Read(ctx) // until the client closes
	}))
	srv.Listener = countingListener{Listener: srv.Listener, writes: &writes}
	srv.Start()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := fmt.Sprintf("frame %d %s", i, strings.Repeat("x", i*40)); string(data) != want {
			t.Fatalf("frame %d: got %.30q…", i, data)
		}
	}
	if n := <-ready; n != 1 {
		t.Errorf("uncork made %d writes, want 1", n)
	}
	if _, data, err := c.Read(ctx); err != nil || string(data) != "uncorked" {
		t.Fatalf("uncorked frame: %q, %v", data, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// TestUncorkOnBrokenConnectionFails: the batch's error reaches the caller.
func TestUncorkOnBrokenConnectionFails(t *testing.T) {
	a, b := net.Pipe()
	b.Close()
	c := &corkconn.Conn{Conn: a}
	c.Cork()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("corked write: %v", err)
	}
	if err := c.Uncork(time.Second); err == nil {
		t.Fatal("uncork to a closed peer succeeded")
	}
	if err := c.Uncork(time.Second); err != nil {
		t.Fatalf("second uncork (nothing corked): %v", err)
	}
}

// TestCloseSendsWhatIsCorked: bytes written while corked still leave when the connection is
// closed before Uncork (a close echo written during a drain round, say); the Uncork that
// follows reports an error, since whether they arrived is unknown.
func TestCloseSendsWhatIsCorked(t *testing.T) {
	a, b := net.Pipe()
	c := &corkconn.Conn{Conn: a}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := b.Read(buf)
		got <- buf[:n]
		b.Close()
	}()
	c.Cork()
	if _, err := c.Write([]byte("close echo")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if s := string(<-got); s != "close echo" {
		t.Fatalf("peer read %q before the close", s)
	}
	if err := c.Uncork(time.Second); err == nil {
		t.Fatal("uncork after a close while corked reported success")
	}
}
