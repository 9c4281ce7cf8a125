package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/inbox"
	"github.com/meshbroker/meshbroker/internal/peerhome"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// buildMeshpeer builds this command's binary for the test: the MCP server is driven as
// Claude Code drives it, a child process spoken to over its stdin and stdout.
func buildMeshpeer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshpeer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// mcpSession starts `meshpeer mcp` for a home, in a project directory as Claude Code would,
// and connects an MCP client to it over stdio.
func mcpSession(t *testing.T, bin, home, url, project string) *mcp.ClientSession {
	t.Helper()
	cmd := exec.Command(bin, "mcp", "-home", home, "-url", url)
	cmd.Dir = project
	c := mcp.NewClient(&mcp.Implementation{Name: "claude-code-test", Version: "0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect to meshpeer mcp: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool and decodes its structured result into out; a tool error fails the test.
func call(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if res.IsError {
		b, _ := json.Marshal(res.Content)
		t.Fatalf("%s failed: %s", tool, b)
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s result %s: %v", tool, b, err)
		}
	}
}

func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inboxTexts reads a session's unseen messages (marking them read) as kind:text.
func inboxTexts(t *testing.T, cs *mcp.ClientSession) []string {
	var out struct{ Messages []inbox.Message }
	call(t, cs, "mesh_inbox", map[string]any{}, &out)
	var texts []string
	for _, m := range out.Messages {
		if m.Kind != "system" {
			texts = append(texts, m.Kind+":"+m.Text)
		}
	}
	return texts
}

// Issue 12's "done when": two Claude Code-style sessions on two broker instances, each
// driven through `meshpeer mcp` over stdio, see each other, exchange an end-to-end
// encrypted DM and a broadcast (the sender sees the DM delivered), and a `next` DM waits
// while its recipient is working — set by its UserPromptSubmit http hook, as installed by
// `meshpeer hooks install` — and arrives when its Stop hook fires; the command hook then
// puts it in front of the model once.
func TestMCPSessionsOnTwoInstances(t *testing.T) {
	bin := buildMeshpeer(t)
	d := testdb.New(t)
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	i2 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	ctx := context.Background()
	mesh, link := newMeshInvite(t, d, "pair", i1.WS, 2)
	dir := t.TempDir()
	aliceHome, bobHome := filepath.Join(dir, "alice"), filepath.Join(dir, "bob")
	meshpeerRun(t, "join", "-home", aliceHome, "-name", "alice", link)
	meshpeerRun(t, "join", "-home", bobHome, "-name", "bob", link)
	aliceProject, bobProject := filepath.Join(dir, "alice-project"), filepath.Join(dir, "bob-project")
	for _, p := range []string{aliceProject, bobProject} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	alice := mcpSession(t, bin, aliceHome, i1.WS, aliceProject)
	bob := mcpSession(t, bin, bobHome, i2.WS, bobProject)
	bobSettings := filepath.Join(dir, "bob-claude", "settings.json")
	meshpeerRun(t, "hooks", "install", "-home", bobHome, "-settings", bobSettings, "-url", i2.WS, "-command", bin)

	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tools, err := alice.ListTools(ctx2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		if !strings.HasPrefix(tool.Name, "mesh_") {
			t.Errorf("tool %q is not namespaced (it could collide with Claude Code's own)", tool.Name)
		}
	}

	sees := func(cs *mcp.ClientSession, name string) bool {
		var out struct{ Peers []peer }
		call(t, cs, "mesh_peers", map[string]any{}, &out)
		for _, p := range out.Peers {
			if p.Name == name && !p.Self {
				return true
			}
		}
		return false
	}
	eventually(t, "alice and bob to see each other", 15*time.Second, func() bool { return sees(alice, "bob") && sees(bob, "alice") })

	var sent struct{ MessageID, Target string }
	call(t, alice, "mesh_send", map[string]any{"to": "bob", "text": "a secret for bob"}, &sent)
	var got []string
	eventually(t, "bob's DM", 10*time.Second, func() bool { got = append(got, inboxTexts(t, bob)...); return len(got) > 0 })
	if strings.Join(got, ",") != "direct:a secret for bob" {
		t.Fatalf("bob's inbox: %v", got)
	}
	// The broker only ever carried ciphertext.
	var stored string
	if err := d.Pool.QueryRow(ctx, "SELECT ciphertext FROM messages WHERE id = $1", sent.MessageID).Scan(&stored); err != nil || strings.Contains(stored, "secret") {
		t.Fatalf("stored ciphertext %q (%v)", stored, err)
	}
	eventually(t, "the DM reported delivered", 10*time.Second, func() bool {
		var st map[string]any
		call(t, alice, "mesh_message_status", map[string]any{"messageId": sent.MessageID}, &st)
		return st["delivered"] == true
	})

	call(t, bob, "mesh_send", map[string]any{"to": "*", "text": "hello everyone"}, nil)
	got = nil
	eventually(t, "alice's broadcast", 10*time.Second, func() bool { got = append(got, inboxTexts(t, alice)...); return len(got) > 0 })
	if strings.Join(got, ",") != "broadcast:hello everyone" {
		t.Fatalf("alice's inbox: %v", got)
	}
	// A group: bob joins ops/db; a message to @ops reaches him (a parent group reaches its
	// subgroups), one to @web does not.
	call(t, bob, "mesh_join_group", map[string]any{"name": "ops/db"}, nil)
	eventually(t, "bob in ops/db", 10*time.Second, func() bool {
		var out struct{ Peers []peer }
		call(t, alice, "mesh_peers", map[string]any{}, &out)
		for _, p := range out.Peers {
			if p.Name == "bob" && len(p.Groups) == 1 {
				return true
			}
		}
		return false
	})
	call(t, alice, "mesh_send", map[string]any{"to": "@web", "text": "not for bob"}, nil)
	call(t, alice, "mesh_send", map[string]any{"to": "@ops", "text": "ops meeting"}, nil)
	got = nil
	eventually(t, "bob's group message", 10*time.Second, func() bool { got = append(got, inboxTexts(t, bob)...); return len(got) > 0 })
	if strings.Join(got, ",") != "broadcast:ops meeting" {
		t.Fatalf("bob's inbox after the group messages: %v", got)
	}

	// Held while working, delivered when the Stop hook fires. Claude Code posts its own hook
	// body to the installed http hook; the broker finds bob's session by its cwd, among the
	// presences of the token's member.
	claude := map[string]any{"session_id": "claude-session-bob", "cwd": bobProject}
	postClaudeHook(t, bobSettings, "UserPromptSubmit", claude)
	eventually(t, "bob shown working", 10*time.Second, func() bool {
		var out struct{ Peers []peer }
		call(t, alice, "mesh_peers", map[string]any{}, &out)
		for _, p := range out.Peers {
			if p.Name == "bob" && p.Status == "working" {
				return true
			}
		}
		return false
	})
	var held struct{ MessageID string }
	call(t, alice, "mesh_send", map[string]any{"to": "bob", "text": "when you are free", "priority": "next"}, &held)
	time.Sleep(1500 * time.Millisecond)
	bobInbox, err := inbox.Open(bobHome, mesh.ID, inbox.ForProject(bobProject))
	if err != nil {
		t.Fatal(err)
	}
	if unseen, _ := bobInbox.Unseen(); len(unseen) != 0 {
		t.Fatalf("a next message reached a working peer: %+v", unseen)
	}
	postClaudeHook(t, bobSettings, "Stop", claude)
	eventually(t, "the held message in bob's inbox after Stop", 10*time.Second, func() bool {
		unseen, _ := bobInbox.Unseen()
		return len(unseen) == 1 && unseen[0].ID == held.MessageID && unseen[0].Text == "when you are free"
	})
	// The Stop command hook shows it to the model once.
	var out bytes.Buffer
	if err := cmdHook([]string{"-home", bobHome}, strings.NewReader(`{"hook_event_name":"Stop","stop_hook_active":false,"cwd":"`+bobProject+`"}`), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"decision": "block"`) || !strings.Contains(out.String(), "when you are free") {
		t.Fatalf("Stop hook output: %s", out.String())
	}
	if texts := inboxTexts(t, bob); len(texts) != 0 {
		t.Fatalf("mesh_inbox shows what the hook already showed: %v", texts)
	}
}

// Spoken to as raw JSON-RPC lines over stdio: the server declares the claude/channel
// capability, and once initialized it sends a channel notification the moment a message
// arrives — naming the sender, never carrying the peer's text.
func TestMCPChannelNotificationOnArrival(t *testing.T) {
	bin := buildMeshpeer(t)
	d := testdb.New(t)
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL})
	_, link := newMeshInvite(t, d, "chan", inst.WS, 2)
	dir := t.TempDir()
	aliceHome, bobHome := filepath.Join(dir, "alice"), filepath.Join(dir, "bob")
	meshpeerRun(t, "join", "-home", aliceHome, "-name", "alice", link)
	meshpeerRun(t, "join", "-home", bobHome, "-name", "bob", link)

	cmd := exec.Command(bin, "mcp", "-home", bobHome)
	cmd.Dir = dir
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan map[string]any, 64)
	go func() {
		dec := json.NewDecoder(stdout)
		for {
			var m map[string]any
			if dec.Decode(&m) != nil {
				close(lines)
				return
			}
			lines <- m
		}
	}()
	next := func(what string, match func(map[string]any) bool) map[string]any {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("stdout closed waiting for %s", what)
				}
				if match(m) {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		}
	}
	write := func(v any) {
		b, _ := json.Marshal(v)
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	write(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": map[string]any{
		"protocolVersion": "2025-06-18", "capabilities": map[string]any{}, "clientInfo": map[string]any{"name": "claude-code-test", "version": "0"}}})
	initRes := next("the initialize result", func(m map[string]any) bool { return m["id"] == float64(1) })
	caps, _ := initRes["result"].(map[string]any)["capabilities"].(map[string]any)
	if exp, _ := caps["experimental"].(map[string]any); exp["claude/channel"] == nil {
		t.Fatalf("no claude/channel capability: %v", initRes)
	}
	write(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})

	bh, _ := peerhome.Load(bobHome)
	eventually(t, "bob's MCP server on the mesh", 15*time.Second, func() bool {
		return strings.Contains(meshpeerRun(t, "peers", "-home", aliceHome, "-json"), `"name": "bob"`)
	})
	meshpeerRun(t, "send", "-home", aliceHome, "-to", bh.Pubkey, "-text", "the secret plan")
	n := next("a channel notification", func(m map[string]any) bool { return m["method"] == "notifications/claude/channel" })
	raw, _ := json.Marshal(n)
	if !strings.Contains(string(raw), "mesh_inbox") || strings.Contains(string(raw), "secret plan") {
		t.Fatalf("channel notification: %s", raw)
	}
}
