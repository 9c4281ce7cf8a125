package inbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Messages are kept once however often they are delivered, read once, and a torn last line
// (a crash in the middle of an append) costs neither itself nor the next message.
func TestInboxDedupesSurvivesATornLineAndMarksSeen(t *testing.T) {
	dir := t.TempDir()
	in, err := Open(dir, "mesh1", "")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := in.Add(Message{ID: "a", Text: "1"}, Message{ID: "b", Text: "2"}, Message{ID: "a", Text: "1"}); err != nil || n != 2 {
		t.Fatalf("add: %d %v; want 2 new", n, err)
	}
	if n, _ := in.Add(Message{ID: "b", Text: "2"}); n != 0 {
		t.Fatalf("a redelivery was added again (%d)", n)
	}
	// A crash tore the next line in half.
	f, err := os.OpenFile(in.msgs, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"id":"torn","te`)
	f.Close()
	if n, err := in.Add(Message{ID: "c", Text: "3"}); err != nil || n != 1 {
		t.Fatalf("add after a torn line: %d %v", n, err)
	}
	unseen, err := in.Unseen()
	if err != nil || len(unseen) != 3 || unseen[2].ID != "c" {
		t.Fatalf("unseen: %+v %v; want a, b, c", unseen, err)
	}
	if err := in.MarkSeen("a", "c"); err != nil {
		t.Fatal(err)
	}
	if unseen, _ = in.Unseen(); len(unseen) != 1 || unseen[0].ID != "b" {
		t.Fatalf("unseen after marking a and c: %+v", unseen)
	}
	if st, err := os.Stat(in.msgs); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("inbox file mode: %v %v", st, err)
	}
}

// A mesh id from an invite names no path outside the inbox directory.
func TestInboxFileNameStaysInside(t *testing.T) {
	for _, id := range []string{strings.Repeat("../", 2) + "x", "a/b", "", "..", "ok-mesh_1"} {
		name := fileName(id)
		if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
			t.Errorf("mesh id %q gives file name %q", id, name)
		}
	}
	if fileName("ok-mesh_1") != "ok-mesh_1" {
		t.Error("a plain mesh id is not kept as the file name")
	}
}

// Two processes taking unread messages at once never both get one, and a receiver's id
// index follows what another process appended.
func TestTakeIsExclusiveAcrossInboxHandles(t *testing.T) {
	dir := t.TempDir()
	a, _ := Open(dir, "m", "")
	b, _ := Open(dir, "m", "") // as another process would
	for i := range 200 {
		if _, err := a.Add(Message{ID: fmt.Sprint("a", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := b.Add(Message{ID: "a7"}, Message{ID: "b1"}); n != 1 {
		t.Fatalf("b added %d; want 1 (a7 is stored by a)", n)
	}
	if n, _ := a.Add(Message{ID: "b1"}); n != 0 {
		t.Fatal("a did not see what b appended")
	}
	var wg sync.WaitGroup
	got := make([][]Message, 2)
	for i, in := range []*Inbox{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], _ = in.Take() }()
	}
	wg.Wait()
	if n := len(got[0]) + len(got[1]); n != 201 {
		t.Fatalf("taken %d + %d; want 201 in all, each once", len(got[0]), len(got[1]))
	}
}
