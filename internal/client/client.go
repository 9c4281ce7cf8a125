// Package client is a minimal claudemesh peer: it dials a broker, sends a signed hello, and
// exchanges frames. The end-to-end tests and the load tool use it; it speaks exactly what
// the TypeScript CLI speaks, plus the optional session proof and client_ack.
//
// A Client's methods are safe for concurrent use; frames other than acks are delivered on
// the Frames channel in arrival order.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/meshbroker/meshbroker/internal/auth"
)

// Identity is a member's keys in a mesh.
type Identity struct {
	MeshID   string
	MemberID string
	Pubkey   string // hex
	Secret   ed25519.PrivateKey
}

// NewKey returns a fresh ed25519 keypair (hex public key).
func NewKey() (string, ed25519.PrivateKey) {
	pub, sec, _ := ed25519.GenerateKey(rand.Reader)
	return hex.EncodeToString(pub), sec
}

// Options shape the hello.
type Options struct {
	SessionID  string
	SessionKey ed25519.PrivateKey // nil: no session key
	Proof      bool               // send sessionSig
	// AnnounceKey, with SessionKey nil, is sent as sessionPubkey without holding its secret
	// (as an impostor would: the tests of the session-ownership rules).
	AnnounceKey  string
	Capabilities []string
	Cwd          string
	Pid          int
	DisplayName  string
	Model        string
	Groups       []map[string]string
}

// Frame is one decoded broker frame.
type Frame map[string]any

// Type returns the frame's type.
func (f Frame) Type() string { s, _ := f["type"].(string); return s }

// Str returns a string field.
func (f Frame) Str(k string) string { s, _ := f[k].(string); return s }

// Client is a connected, authenticated peer.
type Client struct {
	conn       *websocket.Conn
	Ack        Frame // the hello_ack
	SessionPub string
	Frames     chan Frame

	mu      sync.Mutex
	pending map[string]chan Frame // send id → ack
	err     error
	done    chan struct{}
}

// Dial connects and authenticates; it returns the broker's error frame as an error when the
// hello is refused. A hello refused as replayed — another process of the member signed one
// in the same millisecond (the signature covers the timestamp, not the session) — is signed
// again a moment later, up to three times.
func Dial(ctx context.Context, url string, id Identity, opt Options) (*Client, error) {
	c, err := dialOnce(ctx, url, id, opt)
	for try := 0; try < 3; try++ {
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Code != "replayed" {
			break
		}
		time.Sleep(time.Duration(2+try) * time.Millisecond)
		c, err = dialOnce(ctx, url, id, opt)
	}
	return c, err
}

func dialOnce(ctx context.Context, url string, id Identity, opt Options) (*Client, error) {
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 22)
	ts := time.Now().UnixMilli()
	hello := map[string]any{
		"type": "hello", "meshId": id.MeshID, "memberId": id.MemberID, "pubkey": id.Pubkey,
		"sessionId": opt.SessionID, "pid": opt.Pid, "cwd": opt.Cwd, "timestamp": ts,
		"signature": auth.Sign(id.Secret, auth.CanonicalHello(id.MeshID, id.MemberID, id.Pubkey, ts)),
		"peerType":  "ai", "channel": "claude-code",
	}
	if opt.SessionID == "" {
		hello["sessionId"] = fmt.Sprintf("%d-%d", opt.Pid, ts)
	}
	c := &Client{conn: conn, Frames: make(chan Frame, 4096), pending: map[string]chan Frame{}, done: make(chan struct{})}
	if opt.SessionKey != nil {
		c.SessionPub = hex.EncodeToString(opt.SessionKey.Public().(ed25519.PublicKey))
		hello["sessionPubkey"] = c.SessionPub
		if opt.Proof {
			hello["sessionSig"] = auth.Sign(opt.SessionKey, auth.CanonicalSessionProof(id.MeshID, id.Pubkey, c.SessionPub, ts))
		}
	}
	if opt.SessionKey == nil && opt.AnnounceKey != "" {
		c.SessionPub = opt.AnnounceKey
		hello["sessionPubkey"] = opt.AnnounceKey
	}
	if opt.DisplayName != "" {
		hello["displayName"] = opt.DisplayName
	}
	if opt.Model != "" {
		hello["model"] = opt.Model
	}
	if len(opt.Capabilities) > 0 {
		hello["capabilities"] = opt.Capabilities
	}
	if len(opt.Groups) > 0 {
		hello["groups"] = opt.Groups
	}
	if err := c.write(ctx, hello); err != nil {
		conn.CloseNow()
		return nil, err
	}
	// Pushes may arrive before hello_ack; keep them.
	for {
		f, err := c.read(ctx)
		if err != nil {
			conn.CloseNow()
			return nil, err
		}
		switch f.Type() {
		case "hello_ack":
			c.Ack = f
			go c.readLoop()
			return c, nil
		case "error":
			conn.CloseNow()
			return nil, &RefusedError{Code: f.Str("code"), Message: f.Str("message")}
		default:
			c.Frames <- f
		}
	}
}

// RefusedError is a hello refused by the broker.
type RefusedError struct{ Code, Message string }

func (e *RefusedError) Error() string { return "hello refused: " + e.Code + ": " + e.Message }

func (c *Client) write(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.conn.Write(ctx, websocket.MessageText, b)
}

func (c *Client) read(ctx context.Context) (Frame, error) {
	_, data, err := c.conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return f, nil
}

func (c *Client) readLoop() {
	defer close(c.done)
	defer close(c.Frames)
	for {
		f, err := c.read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.err = err
			for _, ch := range c.pending {
				close(ch)
			}
			c.pending = map[string]chan Frame{}
			c.mu.Unlock()
			return
		}
		if f.Type() == "ack" {
			c.mu.Lock()
			ch := c.pending[f.Str("id")]
			delete(c.pending, f.Str("id"))
			c.mu.Unlock()
			if ch != nil {
				ch <- f
				continue
			}
		}
		c.Frames <- f
	}
}

// Message is one send.
type Message struct {
	Target, Priority, Nonce, Ciphertext, ClientMessageID string
}

var sendSeq struct {
	sync.Mutex
	n int
}

// Send sends and waits for the ack.
func (c *Client) Send(ctx context.Context, m Message) (Frame, error) {
	sendSeq.Lock()
	sendSeq.n++
	id := fmt.Sprintf("c%d", sendSeq.n)
	sendSeq.Unlock()
	ch := make(chan Frame, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.pending[id] = ch
	c.mu.Unlock()
	frame := map[string]any{"type": "send", "targetSpec": m.Target, "priority": m.Priority, "nonce": m.Nonce, "ciphertext": m.Ciphertext, "id": id}
	if m.ClientMessageID != "" {
		frame["clientMessageId"] = m.ClientMessageID
	}
	if err := c.write(ctx, frame); err != nil {
		return nil, err
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return nil, errors.New("connection closed before ack")
		}
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Write sends any frame without waiting.
func (c *Client) Write(ctx context.Context, v any) error { return c.write(ctx, v) }

// Next waits for the next frame of the given type (others are dropped).
func (c *Client) Next(ctx context.Context, typ string) (Frame, error) {
	for {
		select {
		case f, ok := <-c.Frames:
			if !ok {
				return nil, fmt.Errorf("connection closed waiting for %s: %v", typ, c.Err())
			}
			if f.Type() == typ {
				return f, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s: %w", typ, ctx.Err())
		}
	}
}

// NextMessage waits for the next push that is a peer message (system events are skipped).
func (c *Client) NextMessage(ctx context.Context) (Frame, error) {
	for {
		f, err := c.Next(ctx, "push")
		if err != nil {
			return nil, err
		}
		if f.Str("subtype") != "system" {
			return f, nil
		}
	}
}

// Err is the error that ended the connection, if it ended.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes normally (1000): the broker ends the presence at once.
func (c *Client) Close() error { return c.conn.Close(websocket.StatusNormalClosure, "") }

// Drop cuts the TCP connection without a close frame, as a crashed process would.
func (c *Client) Drop() error { return c.conn.CloseNow() }
