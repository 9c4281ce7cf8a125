package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/inbox"
	"github.com/meshbroker/meshbroker/internal/invitestore"
	"github.com/meshbroker/meshbroker/internal/peerhome"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// newMeshInvite creates a mesh and an invite link for it with uses joins, naming broker.
func newMeshInvite(t *testing.T, d *testdb.DB, slug, broker string, uses int) (db.Mesh, string) {
	t.Helper()
	ctx := context.Background()
	q := db.New(d.Pool)
	created, err := admin.CreateMesh(ctx, q, slug)
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := q.GetMesh(ctx, created.MeshID)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := invitestore.Create(ctx, d.Pool, invitestore.Params{Mesh: mesh, Role: "member", MaxUses: uses, BrokerURL: broker, AppURL: "http://app"})
	if err != nil {
		t.Fatal(err)
	}
	return mesh, inv.Link
}

// meshpeerRun runs one command and returns its stdout, failing the test on an error.
func meshpeerRun(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("meshpeer %s: %v (%s)", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// Two users, each with a home of their own, join one mesh through two broker instances and
// use the one-shot commands: peers, send (by name, to a group, to everyone), inbox — whose
// messages are decrypted, shown once, and marked read.
func TestHomeCommandsAcrossTwoInstances(t *testing.T) {
	d := testdb.New(t)
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := context.Background()
	_, link := newMeshInvite(t, d, "team", i1.WS, 2)
	dir := t.TempDir()
	alice, bob := filepath.Join(dir, "alice"), filepath.Join(dir, "bob")
	if out := meshpeerRun(t, "init", "-home", alice, "-name", "alice"); !strings.Contains(out, "identity created: alice") {
		t.Fatalf("init: %q", out)
	}
	if out := meshpeerRun(t, "init", "-home", alice, "-name", "other"); !strings.Contains(out, "identity exists: alice") {
		t.Fatalf("init again: %q", out)
	}
	meshpeerRun(t, "join", "-home", alice, link)
	meshpeerRun(t, "join", "-home", bob, "-name", "bob", link) // join alone makes the identity
	var who struct {
		Pubkey string
		Meshes []peerhome.Mesh
	}
	if err := json.Unmarshal([]byte(meshpeerRun(t, "whoami", "-home", bob, "-json")), &who); err != nil || len(who.Meshes) != 1 || who.Meshes[0].Slug != "team" {
		t.Fatalf("bob's whoami: %+v %v", who, err)
	}

	// Bob keeps a session open on instance 2 (in group ops), so "bob" is a peer by name.
	bh, err := peerhome.Load(bob)
	if err != nil {
		t.Fatal(err)
	}
	live, err := client.Dial(ctx, i2.WS, bh.Identity(bh.Meshes[0]), client.Options{SessionID: "bob-live", DisplayName: "bob",
		Groups: []map[string]string{{"name": "ops"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	var peers []peer
	if err := json.Unmarshal([]byte(meshpeerRun(t, "peers", "-home", alice, "-url", i1.WS, "-json")), &peers); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range peers {
		found = found || (p.Name == "bob" && p.Status == "idle")
	}
	if !found {
		t.Fatalf("alice's peers: %+v; want bob", peers)
	}
	live.Close()
	time.Sleep(100 * time.Millisecond)

	// Bob's sessions are gone: a DM to his member key waits; group and broadcast messages
	// are live only (nobody of bob's is there), so bob reconnects first for those.
	meshpeerRun(t, "send", "-home", alice, "-to", who.Pubkey, "-text", "queued for bob")
	var got []inbox.Message
	if err := json.Unmarshal([]byte(meshpeerRun(t, "inbox", "-home", bob, "-url", i2.WS, "-json", "-wait", "1500ms")), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Text != "queued for bob" || got[0].Kind != "direct" || got[0].Undecryptable {
		t.Fatalf("bob's inbox: %+v", got)
	}
	if out := meshpeerRun(t, "inbox", "-home", bob, "-url", i2.WS, "-wait", "200ms"); !strings.Contains(out, "no new messages") {
		t.Fatalf("inbox read twice: %q", out)
	}

	// Live: bob listens (an inbox run) while alice broadcasts and messages the group.
	done := make(chan string, 1)
	go func() {
		var out, errOut bytes.Buffer
		_ = run(ctx, []string{"inbox", "-home", bob, "-url", i2.WS, "-json", "-wait", "3s"}, &out, &errOut)
		done <- out.String()
	}()
	time.Sleep(700 * time.Millisecond)
	meshpeerRun(t, "send", "-home", alice, "-to", "*", "-text", "hello everyone")
	time.Sleep(300 * time.Millisecond) // the broadcast first, then the group message
	meshpeerRun(t, "send", "-home", alice, "-to", "@all", "-text", "second")
	got = nil
	if err := json.Unmarshal([]byte(<-done), &got); err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range got {
		if m.Kind != "system" {
			texts = append(texts, m.Kind+":"+m.Text)
		}
	}
	if strings.Join(texts, ",") != "broadcast:hello everyone,broadcast:second" {
		t.Fatalf("bob's live inbox: %v", texts)
	}
}

// A message stored in the inbox whose acknowledgement never left (the client crashed between
// the two) is delivered again and kept once.
func TestInboxSurvivesACrashBetweenStoreAndAck(t *testing.T) {
	d := testdb.New(t)
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := context.Background()
	_, link := newMeshInvite(t, d, "crash", inst.WS, 2)
	dir := t.TempDir()
	alice, bob := filepath.Join(dir, "alice"), filepath.Join(dir, "bob")
	meshpeerRun(t, "join", "-home", alice, "-name", "alice", link)
	meshpeerRun(t, "join", "-home", bob, "-name", "bob", link)
	bh, _ := peerhome.Load(bob)
	meshpeerRun(t, "send", "-home", alice, "-to", bh.Pubkey, "-text", "keep me")

	// The crash: a connection takes the push and stores it, then dies before its ack.
	p, err := connect(ctx, &bytes.Buffer{}, commonFlags{home: bob})
	if err != nil {
		t.Fatal(err)
	}
	push, err := p.c.NextMessage(withTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.in.Add(p.toMessage(push)); err != nil {
		t.Fatal(err)
	}
	_ = p.c.Drop()
	time.Sleep(200 * time.Millisecond)

	var got []inbox.Message
	if err := json.Unmarshal([]byte(meshpeerRun(t, "inbox", "-home", bob, "-json", "-wait", "1500ms")), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Text != "keep me" {
		t.Fatalf("after the crash: %+v; want the message once", got)
	}
	// Acknowledged this time: nothing comes again.
	if out := meshpeerRun(t, "inbox", "-home", bob, "-wait", "1s"); !strings.Contains(out, "no new messages") {
		t.Fatalf("after the ack: %q", out)
	}
	var redelivered int
	_ = d.Pool.QueryRow(ctx, "SELECT count(*) FROM deliveries WHERE delivered_at IS NULL").Scan(&redelivered)
	if redelivered != 0 {
		t.Fatalf("%d deliveries still pending after the acknowledged inbox run", redelivered)
	}
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
