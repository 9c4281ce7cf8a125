package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/invitestore"
	"github.com/meshbroker/meshbroker/internal/peerhome"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) {
	// No test writes to the real user's meshpeer home: commands given no -home use this.
	dir, err := os.MkdirTemp("", "meshpeer-home-")
	if err != nil {
		panic(err)
	}
	os.Setenv(peerhome.EnvDir, filepath.Join(dir, "home"))
	testdb.Main(m) // exits; the directory is left in the system's temp dir
}

// syncBuffer is an io.Writer a test can read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never showed %q:\n%s", want, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two peers join a mesh with one invite link (no keys or ids copied by hand) and exchange a
// direct, end-to-end encrypted message and a broadcast.
func TestJoinThenTalk(t *testing.T) {
	d := testdb.New(t)
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "BROKER_INVITE_V2_ENABLED": "1"})
	q := db.New(d.Pool)
	ctx := context.Background()
	created, err := admin.CreateMesh(ctx, q, "demo")
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := q.GetMesh(ctx, created.MeshID)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := invitestore.Create(ctx, d.Pool, invitestore.Params{Mesh: mesh, Role: "member", MaxUses: 2, BrokerURL: inst.WS, AppURL: "http://app"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	alice, bob := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json")
	for _, p := range []struct{ name, file string }{{"alice", alice}, {"bob", bob}} {
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{"join", "-name", p.name, "-out", p.file, inv.Link}, &out, &errOut); err != nil {
			t.Fatalf("%s join: %v (%s)", p.name, err, errOut.String())
		}
		if !strings.Contains(out.String(), "joined mesh demo as "+p.name) || !strings.Contains(errOut.String(), "joining through http://127.0.0.1") {
			t.Fatalf("%s join said %q / %q", p.name, out.String(), errOut.String())
		}
		if st, err := os.Stat(p.file); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s identity file: %v %v", p.name, st, err)
		}
	}
	// The invite had two uses: a third join is refused with the broker's reason, and an
	// existing identity file is never overwritten.
	var sink bytes.Buffer
	err = run(ctx, []string{"join", "-out", filepath.Join(dir, "carol.json"), inv.Token}, &sink, &sink)
	if err == nil || !strings.Contains(err.Error(), "invite_exhausted") {
		t.Fatalf("third join: %v", err)
	}
	if err := run(ctx, []string{"join", "-out", alice, inv.Link}, &sink, &sink); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("join over an existing file: %v", err)
	}
	if err := run(ctx, []string{"join", "not-an-invite!"}, &sink, &sink); err == nil || !strings.Contains(err.Error(), "not an invite") {
		t.Fatalf("garbage invite: %v", err)
	}

	var bobID identityFile
	raw, _ := os.ReadFile(bob)
	if err := json.Unmarshal(raw, &bobID); err != nil || bobID.BrokerURL != inst.WS || bobID.RootKey == "" {
		t.Fatalf("bob's identity: %s", raw)
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	listened := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(lctx, []string{"listen", "-identity", bob}, listened, &syncBuffer{}) }()
	waitFor(t, listened, "connected as bob")

	var out bytes.Buffer
	if err := run(ctx, []string{"send", "-identity", alice, "-to", bobID.Pubkey, "-text", "hello bob"}, &out, &sink); err != nil {
		t.Fatalf("send: %v", err)
	}
	waitFor(t, listened, ": hello bob")
	if err := run(ctx, []string{"send", "-identity", alice, "-to", "*", "-text", "hi all"}, &out, &sink); err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	waitFor(t, listened, "hi all")
	stop()
	if err := <-done; err != nil {
		t.Fatalf("listen: %v", err)
	}

	// A v2 code with the broker's address also enrolls, and brings the root key.
	carol := filepath.Join(dir, "carol.json")
	inv2, err := invitestore.Create(ctx, d.Pool, invitestore.Params{Mesh: mesh, Role: "member", BrokerURL: inst.WS, AppURL: "http://app"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"join", "-name", "carol", "-out", carol, inv2.Code}, &sink, &sink); err == nil {
		t.Fatal("a code without -url was accepted")
	}
	if err := run(ctx, []string{"join", "-name", "carol", "-out", carol, "-url", inst.WS, inv2.URL}, &sink, &sink); err != nil {
		t.Fatalf("v2 join: %v", err)
	}
	f, id, err := loadIdentity(carol)
	if err != nil || f.RootKey != *mesh.RootKey || id.MemberID == "" {
		t.Fatalf("carol's identity %+v: %v", f, err)
	}
	if err := run(ctx, []string{"send", "-identity", carol, "-to", bobID.Pubkey, "-text", "from carol"}, &out, &sink); err != nil {
		t.Fatalf("carol sends: %v", err)
	}
}
