package main

// meshpeer mcp: an MCP server on stdio (github.com/modelcontextprotocol/go-sdk) that keeps
// one Claude Code session on a mesh. It holds a socket to the broker for the session's life
// — a session key of its own, proved; client_ack — reconnecting with jittered backoff, and
// stores every message in the inbox on disk before acknowledging it, so the tools (and the
// hook command) read from the inbox and a crash loses nothing. Tool names start with mesh_
// so they never collide with Claude Code's own messaging tools (SendMessage and the like).

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/meshbroker/meshbroker/internal/buildinfo"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/inbox"
	"github.com/meshbroker/meshbroker/internal/peerhome"
)

// live is the MCP server's connection to its mesh, replaced on every reconnect.
type live struct {
	flags   commonFlags
	home    *peerhome.Home
	mesh    peerhome.Mesh
	in      *inbox.Inbox
	session ed25519.PrivateKey // one per process: a reconnect takes its presence back
	sid     string
	log     io.Writer

	// notify, once the MCP client is initialized, tells the session that messages arrived
	// (a channel notification, channel.go).
	notify func(msgs []inbox.Message)

	mu      sync.Mutex
	conn    *peerConn                    // nil while disconnected
	ready   chan struct{}                // closed when conn is set; replaced when it is lost
	waiting map[string]chan client.Frame // _reqId → reply
}

func newLive(c commonFlags, log io.Writer) (*live, error) {
	h, m, in, err := openMesh(c, inbox.ForProject(cwd()))
	if err != nil {
		return nil, err
	}
	_, session, _ := ed25519.GenerateKey(rand.Reader)
	return &live{flags: c, home: h, mesh: m, in: in, session: session, log: log,
		sid: fmt.Sprintf("meshpeer-mcp-%d-%x", os.Getpid(), randBytes(4)), ready: make(chan struct{}), waiting: map[string]chan client.Frame{}}, nil
}

// run connects and reconnects until ctx ends: backoff from 0.5 s doubling to 30 s, each
// wait jittered ±50 % so a broker restart is not met by every client at the same instant.
func (l *live) run(ctx context.Context) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		url := nonEmpty(l.flags.url, l.mesh.BrokerURL)
		fmt.Fprintf(l.log, "meshpeer mcp: connecting to %s (mesh %s) …\n", url, nonEmpty(l.mesh.Slug, l.mesh.MeshID))
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		cl, err := client.Dial(dctx, url, l.home.Identity(l.mesh), client.Options{
			SessionID: l.sid, SessionKey: l.session, Proof: true, Pid: os.Getppid(), Cwd: cwd(),
			DisplayName: l.home.DisplayName, Capabilities: []string{"client_ack"},
		})
		cancel()
		if err != nil {
			var refused *client.RefusedError
			if errors.As(err, &refused) && (refused.Code == "unauthorized" || refused.Code == "revoked") {
				fmt.Fprintf(l.log, "meshpeer mcp: the broker refuses this member (%v); not retrying\n", err)
				return
			}
			wait := jitter(backoff)
			fmt.Fprintf(l.log, "meshpeer mcp: %v; retrying in %s\n", err, wait.Round(10*time.Millisecond))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		p := &peerConn{home: l.home, mesh: l.mesh, session: l.session, c: cl, in: l.in}
		connectedAt := time.Now()
		fmt.Fprintf(l.log, "meshpeer mcp: connected as %s (presence %s)\n", l.home.DisplayName, cl.Ack.Str("presenceId"))
		l.mu.Lock()
		l.conn = p
		close(l.ready)
		l.mu.Unlock()
		l.dispatch(ctx, p)
		cl.Close()
		l.mu.Lock()
		l.conn = nil
		l.ready = make(chan struct{})
		for id, ch := range l.waiting {
			close(ch)
			delete(l.waiting, id)
		}
		l.mu.Unlock()
		switch websocket.CloseStatus(cl.Err()) {
		case 4001, 4002: // kicked, revoked or the mesh deleted: coming back would be refused
			fmt.Fprintf(l.log, "meshpeer mcp: the broker closed this session for good (%v); not reconnecting\n", cl.Err())
			return
		}
		// A connection that lived a while starts the backoff over; one dropped at once (a
		// broker that accepts and closes) does not, so the redials never run hot.
		if time.Since(connectedAt) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func jitter(d time.Duration) time.Duration {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)))
	return d/2 + time.Duration(n.Int64())
}

// dispatch reads the socket until it ends: pushes go to the inbox (then client_ack),
// replies to the waiting tool calls.
func (l *live) dispatch(ctx context.Context, p *peerConn) {
	for {
		var f client.Frame
		select {
		case <-ctx.Done():
			return
		case fr, ok := <-p.c.Frames:
			if !ok {
				fmt.Fprintf(l.log, "meshpeer mcp: connection lost: %v\n", p.c.Err())
				return
			}
			f = fr
		}
		if f.Type() == "push" {
			n, msgs, err := p.store(ctx, []client.Frame{f})
			if err != nil {
				fmt.Fprintf(l.log, "meshpeer mcp: inbox: %v (the message comes again)\n", err)
			}
			if n > 0 && l.notify != nil && f.Str("subtype") != "system" {
				l.notify(msgs) // a new peer message: one frame, one message
			}
			continue
		}
		if id := f.Str("_reqId"); id != "" {
			l.mu.Lock()
			ch := l.waiting[id]
			delete(l.waiting, id)
			l.mu.Unlock()
			if ch != nil {
				ch <- f
			}
		}
	}
}

// current waits (up to 15 s) for a connection.
func (l *live) current(ctx context.Context) (*peerConn, error) {
	l.mu.Lock()
	p, ready := l.conn, l.ready
	l.mu.Unlock()
	if p != nil {
		return p, nil
	}
	select {
	case <-ready:
		return l.current(ctx)
	case <-time.After(15 * time.Second):
		return nil, errors.New("not connected to the broker (still trying; see the server's log)")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// request sends a frame with a _reqId and waits for its reply (an error frame is an error).
func (l *live) request(ctx context.Context, frame map[string]any) (client.Frame, error) {
	p, err := l.current(ctx)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("m%x", randBytes(6))
	frame["_reqId"] = id
	ch := make(chan client.Frame, 1)
	l.mu.Lock()
	l.waiting[id] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiting, id)
		l.mu.Unlock()
	}()
	if err := p.c.Write(ctx, frame); err != nil {
		return nil, err
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return nil, errors.New("connection lost before the broker answered")
		}
		if f.Type() == "error" {
			return nil, fmt.Errorf("%s: %s", f.Str("code"), f.Str("message"))
		}
		return f, nil
	case <-time.After(15 * time.Second):
		return nil, errors.New("the broker did not answer within 15 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// write sends a frame that has no reply.
func (l *live) write(ctx context.Context, frame map[string]any) error {
	p, err := l.current(ctx)
	if err != nil {
		return err
	}
	return p.c.Write(ctx, frame)
}

func (l *live) peers(ctx context.Context) ([]peer, error) {
	f, err := l.request(ctx, map[string]any{"type": "list_peers"})
	if err != nil {
		return nil, err
	}
	p, err := l.current(ctx)
	if err != nil {
		return nil, err
	}
	return parsePeers(f, p.c.SessionPub), nil
}

// The tools' inputs and outputs.
type (
	noInput  struct{}
	peersOut struct {
		Peers []peer `json:"peers"`
	}
	sendIn struct {
		To       string `json:"to" jsonschema:"a peer's name or pubkey (direct, end-to-end encrypted), @group (a group and its subgroups) or * (everyone)"`
		Text     string `json:"text" jsonschema:"the message"`
		Priority string `json:"priority,omitempty" jsonschema:"now (default: pushed at once), next or low (direct messages wait while the recipient is working)"`
	}
	sendOut struct {
		MessageID string `json:"messageId"`
		Target    string `json:"target"`
	}
	inboxIn struct {
		All bool `json:"all,omitempty" jsonschema:"include messages already read"`
	}
	inboxOut struct {
		Messages []inbox.Message `json:"messages"`
	}
	statusIn struct {
		Status string `json:"status" jsonschema:"idle, working or dnd"`
	}
	summaryIn struct {
		Summary string `json:"summary" jsonschema:"what this session is doing, shown to the other peers"`
	}
	visibleIn struct {
		Visible bool `json:"visible" jsonschema:"false hides this session from other members' peer lists and broadcasts"`
	}
	groupIn struct {
		Name string `json:"name" jsonschema:"group name without @; a/b is a subgroup of a"`
		Role string `json:"role,omitempty" jsonschema:"optional role in the group"`
	}
	messageStatusIn struct {
		MessageID string `json:"messageId" jsonschema:"the id mesh_send returned"`
	}
	okOut struct {
		OK bool `json:"ok"`
	}
)

// newMCPServer builds the server and its tools over l; initialized is called once the
// client finished the handshake.
func newMCPServer(l *live, initialized func()) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "meshpeer", Version: buildinfo.Version}, &mcp.ServerOptions{
		Instructions: "Tools of the claudemesh mesh this session is on: other Claude Code sessions (peers) you can see and message. " +
			"Messages to you arrive in the inbox: read them with mesh_inbox.",
		Capabilities: &mcp.ServerCapabilities{Experimental: map[string]any{channelCapability: map[string]any{}}},
		InitializedHandler: func(context.Context, *mcp.InitializedRequest) {
			if initialized != nil {
				initialized()
			}
		},
	})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_peers", Description: "List the peers on the mesh: name, pubkey, status (idle, working, dnd), summary."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ noInput) (*mcp.CallToolResult, peersOut, error) {
			ps, err := l.peers(ctx)
			return nil, peersOut{Peers: ps}, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_send", Description: "Send a message to a peer (by name or pubkey; end-to-end encrypted), to a @group, or to everyone (*)."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in sendIn) (*mcp.CallToolResult, sendOut, error) {
			out, err := l.send(ctx, in)
			return nil, out, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_inbox", Description: "Messages received and not read yet (they are marked read); all:true for every message kept."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in inboxIn) (*mcp.CallToolResult, inboxOut, error) {
			msgs, err := readInbox(l.in, in.All, true)
			return nil, inboxOut{Messages: msgs}, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_set_status", Description: "Set this session's status: idle, working or dnd (direct next/low messages wait while not idle)."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in statusIn) (*mcp.CallToolResult, okOut, error) {
			if in.Status != "idle" && in.Status != "working" && in.Status != "dnd" {
				return nil, okOut{}, errors.New("status must be idle, working or dnd")
			}
			return nil, okOut{OK: true}, l.write(ctx, map[string]any{"type": "set_status", "status": in.Status})
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_set_summary", Description: "Set the one-line summary of what this session is doing, shown to peers."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in summaryIn) (*mcp.CallToolResult, okOut, error) {
			return nil, okOut{OK: true}, l.write(ctx, map[string]any{"type": "set_summary", "summary": in.Summary})
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_set_visible", Description: "Show or hide this session from other members."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in visibleIn) (*mcp.CallToolResult, okOut, error) {
			_, err := l.request(ctx, map[string]any{"type": "set_visible", "visible": in.Visible})
			return nil, okOut{OK: err == nil}, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_join_group", Description: "Join a group: messages to @name (or a parent group) reach this session."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in groupIn) (*mcp.CallToolResult, okOut, error) {
			frame := map[string]any{"type": "join_group", "name": in.Name}
			if in.Role != "" {
				frame["role"] = in.Role
			}
			return nil, okOut{OK: true}, l.write(ctx, frame)
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_leave_group", Description: "Leave a group."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in groupIn) (*mcp.CallToolResult, okOut, error) {
			return nil, okOut{OK: true}, l.write(ctx, map[string]any{"type": "leave_group", "name": in.Name})
		})
	mcp.AddTool(s, &mcp.Tool{Name: "mesh_message_status", Description: "Whether a message sent with mesh_send was delivered, per recipient."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in messageStatusIn) (*mcp.CallToolResult, map[string]any, error) {
			f, err := l.request(ctx, map[string]any{"type": "message_status", "messageId": in.MessageID})
			if err != nil {
				return nil, nil, err
			}
			delete(f, "_reqId")
			return nil, f, nil
		})
	return s
}

func (l *live) send(ctx context.Context, in sendIn) (sendOut, error) {
	p, err := l.current(ctx)
	if err != nil {
		return sendOut{}, err
	}
	id, target, err := sendText(ctx, p, l.peers, in.To, in.Text, in.Priority)
	return sendOut{MessageID: id, Target: target}, err
}

// cmdMCP serves MCP on stdin/stdout until stdin closes.
func cmdMCP(ctx context.Context, args []string, stdin io.ReadCloser, stdout io.WriteCloser, stderr io.Writer) error {
	var c commonFlags
	fs := newFlags("mcp", &c)
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	l, err := newLive(c, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &lineWriter{w: stdout}
	var ready atomic.Bool
	l.notify = func(msgs []inbox.Message) {
		if ready.Load() {
			out.notifyChannel(msgs)
		}
	}
	go l.run(ctx)
	return newMCPServer(l, func() { ready.Store(true) }).Run(ctx, &mcp.IOTransport{Reader: stdin, Writer: out})
}
