package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Connections over the budget are closed at once; closing one frees its slot, once however
// often it is closed.
func TestListenerKeepsItsBudget(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	refused := map[string]int{}
	ln := Wrap(tcp, 2, 0, func(r string) { mu.Lock(); refused[r]++; mu.Unlock() })
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(), dial()
	defer a.Close()
	defer b.Close()
	s1, s2 := <-accepted, <-accepted
	over := dial()
	defer over.Close()
	expectClosed(t, "connection over the budget", over)
	if ln.Open() != 2 {
		t.Fatalf("open %d, want 2", ln.Open())
	}
	_ = s1.Close()
	_ = s1.Close() // a second Close must not free a second slot
	if ln.Open() != 1 {
		t.Fatalf("open %d after closing one twice, want 1", ln.Open())
	}
	c := dial()
	defer c.Close()
	select {
	case s3 := <-accepted:
		defer s3.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
	_ = s2.Close()
	mu.Lock()
	defer mu.Unlock()
	if refused[ReasonBudget] != 1 {
		t.Fatalf("refused %v, want one for the budget", refused)
	}
}

func expectClosed(t *testing.T, what string, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || err == io.ErrNoProgress || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("%s: read %v, want the connection closed by the listener", what, err)
	}
}

// serve runs an http.Server on a listener wrapped with the budget and per-IP cap; /hijack
// hijacks the connection and holds it.
func serve(t *testing.T, budget, perIP int) *Listener {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Wrap(tcp, budget, perIP, nil)
	var held []net.Conn
	var hmu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		hmu.Lock()
		held = append(held, c)
		hmu.Unlock()
	})
	srv := &http.Server{Handler: mux, ConnState: ln.ConnState, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		hmu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		hmu.Unlock()
	})
	return ln
}

// request sends one keep-alive request on a new connection from the given local address
// and leaves the connection open (idle); it returns the connection.
func request(t *testing.T, addr, from, path string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if path == "/hijack" {
		return c
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request from %s: %v", from, err)
	}
	resp.Body.Close()
	return c
}

// One peer IP holds at most perIP plain connections; another IP is not affected, and
// hijacked connections (WebSockets) are not counted.
func TestPlainConnectionsPerIP(t *testing.T) {
	ln := serve(t, 100, 3)
	addr := ln.Addr().String()
	for range 2 {
		defer request(t, addr, "127.0.0.1", "/hijack").Close()
	}
	for range 3 {
		defer request(t, addr, "127.0.0.1", "/ok").Close()
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, "a 4th plain connection from one IP", c)
	defer request(t, addr, "127.0.0.2", "/ok").Close() // another IP is served
}

// While the budget is short, connections idle between requests are closed to make room:
// idle keep-alive connections cannot hold the descriptors.
func TestIdleConnectionsReapedUnderPressure(t *testing.T) {
	ln := serve(t, 8, 0)
	addr := ln.Addr().String()
	var idle []net.Conn
	for range 8 {
		idle = append(idle, request(t, addr, "127.0.0.1", "/ok"))
	}
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	time.Sleep(reapAfter + 200*time.Millisecond)
	// The budget is spent: this one is refused, but its accept reaps idle ones...
	d := net.Dialer{}
	if c, err := d.Dial("tcp", addr); err == nil {
		_ = c.Close()
	}
	// ...so the next is served.
	var served bool
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !served; {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			resp.Body.Close()
			served = true
		}
		_ = c.Close()
	}
	if !served {
		t.Fatal("no request served while idle connections held the budget")
	}
}

func TestOpenFileLimitRaisedToHard(t *testing.T) {
	soft, hard, err := RaiseOpenFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if soft != hard {
		t.Fatalf("soft %d, hard %d: the soft limit was not raised", soft, hard)
	}
	if b := Budget(soft); b <= 0 || uint64(b) >= soft {
		t.Fatalf("budget %d of %d descriptors", b, soft)
	}
}

// Per-IP limits key an IPv6 peer by its /64 (one host's block), an IPv4 peer by its address.
func TestIPKey(t *testing.T) {
	if IPKey("2001:db8:1:2::1") != IPKey("2001:db8:1:2:ffff::9") || IPKey("2001:db8:1:2::1") == IPKey("2001:db8:1:3::1") {
		t.Fatalf("IPv6 keys: %s %s %s", IPKey("2001:db8:1:2::1"), IPKey("2001:db8:1:2:ffff::9"), IPKey("2001:db8:1:3::1"))
	}
	if IPKey("10.0.0.1") == IPKey("10.0.0.2") || IPKey("::ffff:10.0.0.1") != "10.0.0.1" {
		t.Fatal("IPv4 keys")
	}
}
