package connlimit

import (
	"io"
	"net"
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
	refused := 0
	ln := Wrap(tcp, 2, func() { refused++ })
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
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection over the budget: read %v, want EOF (closed by the listener)", err)
	}
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
	if refused != 1 {
		t.Fatalf("refused %d, want 1", refused)
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
