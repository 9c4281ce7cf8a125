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

	"github.com/meshbroker/meshbroker/internal/invite"
)

// An invite token is untrusted input (its signature only proves it is self-consistent): a
// mesh_slug with path separators must not choose where join writes the identity when -out
// is not given.
func TestJoinDefaultFileStaysInTheWorkingDirectory(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"ok":true,"memberId":"m1"}`))
	}))
	defer srv.Close()
	_, sec, _ := ed25519.GenerateKey(rand.Reader)
	p := invite.Payload{V: 1, MeshID: "mesh1", MeshSlug: "../../x", BrokerURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws",
		ExpiresAt: time.Now().Add(time.Hour).Unix(), MeshRootKey: "root", Role: "member"}
	p.Sign(sec)
	root := t.TempDir()
	work := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"join", "-name", "eve", p.Token()}, &out, &errOut); err != nil {
		t.Fatalf("join: %v (%s)", err, errOut.String())
	}
	entries, _ := os.ReadDir(work)
	if len(entries) != 1 {
		t.Fatalf("identity not written in the working directory: %v; said %q", entries, out.String())
	}
	if _, err := os.Stat(filepath.Join(root, "x.identity.json")); err == nil {
		t.Fatal("the token's slug placed the identity outside the working directory")
	}
}
