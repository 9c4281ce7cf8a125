package main

// The commands that use the identity in the user's meshpeer home (internal/peerhome): init,
// whoami, peers, send and inbox. Each connects with a session key of its own process
// (proved with sessionSig), does its work and leaves.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/delivery"
	"github.com/meshbroker/meshbroker/internal/envelope"
	"github.com/meshbroker/meshbroker/internal/inbox"
	"github.com/meshbroker/meshbroker/internal/peerhome"
)

// commonFlags are the flags every home command takes.
type commonFlags struct {
	home, mesh, url string
	json            bool
}

func newFlags(name string, c *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	def, _ := peerhome.DefaultDir()
	fs.StringVar(&c.home, "home", def, "")
	fs.StringVar(&c.mesh, "mesh", "", "")
	fs.StringVar(&c.url, "url", "", "")
	fs.BoolVar(&c.json, "json", false, "")
	return fs
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// cmdInit creates the member identity (or shows the existing one).
func cmdInit(args []string, stdout io.Writer) error {
	var c commonFlags
	fs := newFlags("init", &c)
	name := fs.String("name", "", "")
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	if *name == "" {
		*name = defaultName()
	}
	h, created, err := peerhome.Init(c.home, *name)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(stdout, map[string]any{"created": created, "pubkey": h.Pubkey, "displayName": h.DisplayName, "home": h.Dir})
	}
	if created {
		fmt.Fprintf(stdout, "identity created: %s (%s), in %s\n", h.DisplayName, h.Pubkey, h.Dir)
	} else {
		fmt.Fprintf(stdout, "identity exists: %s (%s), in %s\n", h.DisplayName, h.Pubkey, h.Dir)
	}
	return nil
}

// cmdWhoami shows the identity and the meshes joined.
func cmdWhoami(args []string, stdout io.Writer) error {
	var c commonFlags
	fs := newFlags("whoami", &c)
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	h, err := peerhome.Load(c.home)
	if err != nil {
		return err
	}
	logins := map[string]any{}
	for base, l := range h.Logins {
		logins[base] = map[string]string{"userId": l.UserID, "email": l.Email} // never the bearer
	}
	meshes := make([]peerhome.Mesh, len(h.Meshes))
	for i, m := range h.Meshes {
		m.RootKey = "" // a secret of the mesh: not for logs and pastes
		meshes[i] = m
	}
	if c.json {
		return printJSON(stdout, map[string]any{"pubkey": h.Pubkey, "displayName": h.DisplayName, "home": h.Dir, "meshes": meshes, "logins": logins})
	}
	for base, l := range h.Logins {
		fmt.Fprintf(stdout, "logged in to %s as %s (%s)\n", base, nonEmpty(l.Email, l.Name), l.UserID)
	}
	fmt.Fprintf(stdout, "%s (%s), in %s\n", h.DisplayName, h.Pubkey, h.Dir)
	if len(h.Meshes) == 0 {
		fmt.Fprintln(stdout, "no mesh joined yet: meshpeer join <invite>")
	}
	for _, m := range h.Meshes {
		fmt.Fprintf(stdout, "  mesh %s (%s) as member %s at %s\n", nonEmpty(m.Slug, m.MeshID), m.MeshID, m.MemberID, m.BrokerURL)
	}
	return nil
}

// peerConn is a connection of this process to one mesh. Every connection asks for
// client_ack: a message addressed to the member may reach any of its sessions, this
// short-lived one included, so whatever it receives goes to the inbox before it is
// acknowledged, and what it leaves unacknowledged is delivered again.
type peerConn struct {
	home    *peerhome.Home
	mesh    peerhome.Mesh
	session ed25519.PrivateKey
	c       *client.Client
	in      *inbox.Inbox
}

// openMesh loads the home, picks the mesh the flags name and opens its inbox for reader
// (inbox.Open).
func openMesh(c commonFlags, reader string) (*peerhome.Home, peerhome.Mesh, *inbox.Inbox, error) {
	h, err := peerhome.Load(c.home)
	if err != nil {
		return nil, peerhome.Mesh{}, nil, err
	}
	m, err := h.Mesh(c.mesh)
	if err != nil {
		return nil, peerhome.Mesh{}, nil, err
	}
	in, err := inbox.Open(h.Dir, m.MeshID, reader)
	return h, m, in, err
}

// connect opens a socket to the chosen mesh with a fresh session key, proved.
func connect(ctx context.Context, stderr io.Writer, c commonFlags) (*peerConn, error) {
	h, m, in, err := openMesh(c, "")
	if err != nil {
		return nil, err
	}
	url := nonEmpty(c.url, m.BrokerURL)
	_, session, _ := ed25519.GenerateKey(rand.Reader)
	fmt.Fprintf(stderr, "connecting to %s (mesh %s) …\n", url, nonEmpty(m.Slug, m.MeshID))
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts := client.Options{
		SessionID: fmt.Sprintf("meshpeer-%d-%x", os.Getpid(), randBytes(4)), SessionKey: session, Proof: true,
		Pid: os.Getpid(), Cwd: cwd(), DisplayName: h.DisplayName, Capabilities: []string{"client_ack"},
	}
	cl, err := client.Dial(dctx, url, h.Identity(m), opts)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return &peerConn{home: h, mesh: m, session: session, c: cl, in: in}, nil
}

// request writes a frame with a _reqId and waits for the reply of type want.
func (p *peerConn) request(ctx context.Context, frame map[string]any, want string) (client.Frame, error) {
	frame["_reqId"] = fmt.Sprintf("r%x", randBytes(4))
	if err := p.c.Write(ctx, frame); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		var f client.Frame
		select {
		case <-rctx.Done():
			return nil, fmt.Errorf("waiting for %s: %w", want, rctx.Err())
		case fr, ok := <-p.c.Frames:
			if !ok {
				return nil, fmt.Errorf("connection closed waiting for %s: %v", want, p.c.Err())
			}
			f = fr
		}
		if f.Type() == "push" {
			if _, _, err := p.store(ctx, []client.Frame{f}); err != nil {
				return nil, err
			}
			continue
		}
		if f.Type() == "error" && f.Str("_reqId") == frame["_reqId"] {
			return nil, fmt.Errorf("%s: %s", f.Str("code"), f.Str("message"))
		}
		if f.Type() == want {
			return f, nil
		}
	}
}

// peer is one entry of peers_list, as meshpeer shows it.
type peer struct {
	Name         string `json:"name"`
	Pubkey       string `json:"pubkey"`
	MemberPubkey string `json:"memberPubkey"`
	Status       string `json:"status"`
	Summary      string `json:"summary,omitempty"`
	Cwd          string `json:"cwd,omitempty"`
	Groups       []any  `json:"groups,omitempty"`
	Self         bool   `json:"self,omitempty"`
}

func (p *peerConn) peers(ctx context.Context) ([]peer, error) {
	f, err := p.request(ctx, map[string]any{"type": "list_peers"}, "peers_list")
	if err != nil {
		return nil, err
	}
	return parsePeers(f, p.c.SessionPub), nil
}

// parsePeers reads a peers_list frame; selfPub is this process's session key.
func parsePeers(f client.Frame, selfPub string) []peer {
	raw, _ := f["peers"].([]any)
	out := make([]peer, 0, len(raw))
	for _, r := range raw {
		e, _ := r.(map[string]any)
		s := func(k string) string { v, _ := e[k].(string); return v }
		groups, _ := e["groups"].([]any)
		out = append(out, peer{Name: s("displayName"), Pubkey: s("pubkey"), MemberPubkey: s("memberPubkey"), Status: s("status"),
			Summary: s("summary"), Cwd: s("cwd"), Groups: groups, Self: s("pubkey") == selfPub})
	}
	return out
}

func cmdPeers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlags("peers", &c)
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	p, err := connect(ctx, stderr, c)
	if err != nil {
		return err
	}
	defer p.c.Close()
	list, err := p.peers(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tPUBKEY\tSUMMARY")
	for _, e := range list {
		name := e.Name
		if e.Self {
			name += " (this process)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, e.Status, e.Pubkey, e.Summary)
	}
	return tw.Flush()
}

// resolveTarget turns a peer's display name into its key: it must name exactly one other
// peer (or sessions of one member, reached by its member key).
func resolveTarget(to string, list []peer) (string, error) {
	var found []peer
	for _, e := range list {
		if !e.Self && strings.EqualFold(e.Name, to) {
			found = append(found, e)
		}
	}
	switch {
	case len(found) == 0:
		return "", fmt.Errorf("no peer named %q online (meshpeer peers lists them)", to)
	case len(found) > 1 && !sameMember(found):
		return "", fmt.Errorf("%d peers are named %q: send to a pubkey instead", len(found), to)
	case len(found) > 1:
		return found[0].MemberPubkey, nil // one member's sessions: its member key reaches one of them
	}
	return found[0].Pubkey, nil
}

// sendText sends text to a name, a pubkey, @group or * (names looked up with listPeers),
// encrypted as sealFor does, with a clientMessageId so a retry is stored once.
func sendText(ctx context.Context, p *peerConn, listPeers func(context.Context) ([]peer, error), to, text, priority string) (messageID, target string, err error) {
	if to == "" || text == "" {
		return "", "", errors.New("a target (name, pubkey, @group or *) and a text are needed")
	}
	switch delivery.TargetKind(to) {
	case "direct":
		target = strings.ToLower(to)
	case "broadcast", "group":
		target = to
	default:
		list, err := listPeers(ctx)
		if err != nil {
			return "", "", err
		}
		if target, err = resolveTarget(to, list); err != nil {
			return "", "", err
		}
	}
	nonce, ct, err := p.sealFor(target, text)
	if err != nil {
		return "", "", fmt.Errorf("encrypt for %s: %w", target, err)
	}
	ack, err := p.c.Send(ctx, client.Message{Target: target, Priority: nonEmpty(priority, "now"), Nonce: nonce, Ciphertext: ct,
		ClientMessageID: fmt.Sprintf("%x", randBytes(12))})
	if err != nil {
		return "", "", err
	}
	if ack["queued"] != true {
		return "", "", fmt.Errorf("refused: %s", ack.Str("error"))
	}
	return ack.Str("messageId"), target, nil
}

func sameMember(ps []peer) bool {
	for _, p := range ps[1:] {
		if p.MemberPubkey != ps[0].MemberPubkey {
			return false
		}
	}
	return true
}

// sealFor encrypts text for a target as the claudemesh CLI does: crypto_box to a direct
// recipient's key (from this session's key, which the push names as the sender); multicast
// carries base64 text (CLI v0.1: there is no per-recipient encryption for it).
func (p *peerConn) sealFor(target, text string) (nonce, ciphertext string, err error) {
	if target == "*" || strings.HasPrefix(target, "@") {
		return base64.StdEncoding.EncodeToString(randBytes(24)), base64.StdEncoding.EncodeToString([]byte(text)), nil
	}
	return envelope.Seal([]byte(text), target, p.session)
}

func cmdSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlags("send", &c)
	to := fs.String("to", "", "")
	text := fs.String("text", "", "")
	priority := fs.String("priority", "now", "")
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	if *to == "" || *text == "" {
		return usageErr{"send needs -to (a name, pubkey, @group or *) and -text"}
	}
	p, err := connect(ctx, stderr, c)
	if err != nil {
		return err
	}
	defer p.c.Close()
	id, target, err := sendText(ctx, p, p.peers, *to, *text, *priority)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(stdout, map[string]any{"messageId": id, "target": target, "queued": true})
	}
	fmt.Fprintf(stdout, "sent %s to %s\n", id, target)
	return nil
}

// toMessage decrypts a push into an inbox message: with this session's key or the member
// key (a direct message may be addressed to either), else as multicast text.
func (p *peerConn) toMessage(f client.Frame) inbox.Message {
	m := inbox.Message{ID: f.Str("messageId"), MeshID: p.mesh.MeshID, From: f.Str("senderPubkey"),
		FromMember: f.Str("senderMemberPubkey"), Priority: f.Str("priority"), CreatedAt: f.Str("createdAt"), ReceivedAt: time.Now().UTC()}
	if f.Str("subtype") == "system" {
		data, _ := json.Marshal(f["eventData"])
		m.Kind, m.Event, m.Text = "system", f.Str("event"), string(data)
		return m
	}
	for _, key := range []ed25519.PrivateKey{p.session, p.home.Secret()} {
		if pt, err := envelope.Open(f.Str("nonce"), f.Str("ciphertext"), m.From, key); err == nil {
			m.Kind, m.Text = "direct", string(pt)
			return m
		}
	}
	if plain, err := base64.StdEncoding.DecodeString(f.Str("ciphertext")); err == nil && utf8.Valid(plain) {
		m.Kind, m.Text = "broadcast", string(plain)
		return m
	}
	m.Kind, m.Undecryptable = "direct", true
	return m
}

// receive takes pushes for the given time and stores each in the inbox before it is
// acknowledged: a crash between the two gets it delivered again, never lost.
func (p *peerConn) receive(ctx context.Context, wait time.Duration) (int, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	n := 0
	for {
		var batch []client.Frame
		select {
		case <-ctx.Done():
			return n, nil
		case <-deadline.C:
			return n, nil
		case f, ok := <-p.c.Frames:
			if !ok {
				return n, fmt.Errorf("connection closed: %v", p.c.Err())
			}
			batch = append(batch, f)
		}
	more:
		for {
			select {
			case f, ok := <-p.c.Frames:
				if !ok {
					break more
				}
				batch = append(batch, f)
			default:
				break more
			}
		}
		added, _, err := p.store(ctx, batch)
		n += added
		if err != nil {
			return n, err
		}
	}
}

// store puts pushes in the inbox (synced) and only then acknowledges them: a crash between
// the two gets them delivered again, never lost. It returns how many were new, and the
// messages it stored (decrypted).
func (p *peerConn) store(ctx context.Context, frames []client.Frame) (int, []inbox.Message, error) {
	var msgs []inbox.Message
	var ids []string
	for _, f := range frames {
		if f.Type() != "push" {
			continue
		}
		// Of the system events only the loss of messages is kept: joins and departures
		// (each one-shot command of a peer makes two) are what mesh_peers shows anyway.
		if f.Str("subtype") == "system" && f.Str("event") != "messages_missed" {
			continue
		}
		msgs = append(msgs, p.toMessage(f))
		if f.Str("subtype") != "system" {
			ids = append(ids, f.Str("messageId"))
		}
	}
	added, err := p.in.Add(msgs...)
	if err != nil {
		return 0, nil, err // not acknowledged: delivered again
	}
	if len(ids) > 0 {
		if err := p.c.Write(ctx, map[string]any{"type": "client_ack", "messageIds": ids}); err != nil {
			return added, msgs, err
		}
	}
	return added, msgs, nil
}

func cmdInbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlags("inbox", &c)
	wait := fs.Duration("wait", time.Second, "")
	all := fs.Bool("all", false, "")
	keep := fs.Bool("keep", false, "")
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	p, err := connect(ctx, stderr, c)
	if err != nil {
		return err
	}
	in := p.in
	fmt.Fprintf(stderr, "collecting messages for %s …\n", *wait)
	_, rerr := p.receive(ctx, *wait)
	time.Sleep(50 * time.Millisecond) // let the last client_ack leave before the close frame
	p.c.Close()
	if rerr != nil {
		fmt.Fprintf(stderr, "receiving stopped: %v\n", rerr)
	}
	msgs, err := readInbox(in, *all, !*keep)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(stdout, msgs)
	}
	if len(msgs) == 0 {
		fmt.Fprintln(stdout, "no new messages")
	}
	for _, m := range msgs {
		if m.Kind == "system" {
			fmt.Fprintf(stdout, "[system] %s %s\n", m.Event, m.Text)
			continue
		}
		fmt.Fprintf(stdout, "[%s %s] from %s: %s\n", m.Kind, m.Priority, short(m.From), m.Text)
	}
	return nil
}

// readInbox returns the unseen messages (all: every message kept), marking them seen when
// mark is set; never nil.
func readInbox(in *inbox.Inbox, all, mark bool) ([]inbox.Message, error) {
	if mark && !all {
		msgs, err := in.Take()
		if msgs == nil {
			msgs = []inbox.Message{}
		}
		return msgs, err
	}
	msgs, err := in.Unseen()
	if all {
		msgs, err = in.All()
	}
	if err != nil {
		return nil, err
	}
	if mark && len(msgs) > 0 {
		ids := make([]string, len(msgs))
		for i, m := range msgs {
			ids[i] = m.ID
		}
		if err := in.MarkSeen(ids...); err != nil {
			return nil, err
		}
	}
	if msgs == nil {
		msgs = []inbox.Message{}
	}
	return msgs, nil
}

func short(k string) string {
	if len(k) > 12 {
		return k[:12] + "…"
	}
	return k
}
