package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/inbox"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/peerhome"
)

// An invite token is untrusted input (its signature only proves it is self-consistent): a
// mesh id or slug with path separators must not choose where join, or the inbox of that
// mesh, writes anything.
func TestJoinWritesOnlyInTheHome(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"ok":true,"memberId":"m1"}`))
	}))
	defer srv.Close()
	_, sec, _ := ed25519.GenerateKey(rand.Reader)
	p := invite.Payload{V: 1, MeshID: strings.Repeat("../", 3) + "x", MeshSlug: strings.Repeat("../", 2) + "x", BrokerURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws",
		ExpiresAt: time.Now().Add(time.Hour).Unix(), MeshRootKey: "root", Role: "member"}
	p.Sign(sec)
	root := t.TempDir()
	home := filepath.Join(root, "a", "b", "home")
	work := filepath.Join(root, "a", "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"join", "-home", home, "-name", "eve", p.Token()}, &out, &errOut); err != nil {
		t.Fatalf("join: %v (%s)", err, errOut.String())
	}
	h, err := peerhome.Load(home)
	if err != nil || len(h.Meshes) != 1 || h.Meshes[0].MeshID != p.MeshID {
		t.Fatalf("home after join: %+v %v", h, err)
	}
	in, err := inbox.Open(home, p.MeshID, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Add(inbox.Message{ID: "m", Text: "t"}); err != nil {
		t.Fatal(err)
	}
	var outside []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(path, home+string(filepath.Separator)) {
			outside = append(outside, path)
		}
		return nil
	})
	if len(outside) > 0 {
		t.Fatalf("files written outside the home: %v", outside)
	}
}
