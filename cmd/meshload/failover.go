package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshbroker/meshbroker/internal/client"
)

// peer is one meshload peer. With -failover it survives the loss of its broker: when its
// socket ends it reconnects — to the next URL, with the same member, session key and
// sessionId, so the reconnect takes its presence over inside the grace window — and its
// receivers acknowledge every push with client_ack, so the broker's at-least-once guarantee
// is what is measured: an acked send that never arrives is lost.
type peer struct {
	id        client.Identity
	sess      ed25519.PrivateKey
	sessionID string
	pid       int
	urls      []string
	ack       bool // a receiver that acknowledges (-failover)

	mu   sync.Mutex
	c    *client.Client
	next int // index of the URL to try on the next reconnect
}

func (p *peer) options() client.Options {
	o := client.Options{SessionKey: p.sess, SessionID: p.sessionID, Cwd: "/meshload", Pid: p.pid}
	if p.ack {
		o.Capabilities = []string{"client_ack"}
	}
	return o
}

// dial connects to url.
func (p *peer) dial(ctx context.Context, url string) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, url, p.id, p.options())
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.c = c
	p.mu.Unlock()
	return nil
}

func (p *peer) current() *client.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c
}

// redial reconnects until it succeeds or ctx ends, trying the URLs in turn with backoff.
func (p *peer) redial(ctx context.Context) bool {
	wait := 50 * time.Millisecond
	for ctx.Err() == nil {
		p.mu.Lock()
		url := p.urls[p.next%len(p.urls)]
		p.next++
		p.mu.Unlock()
		if err := p.dial(ctx, url); err == nil {
			failovers.Add(1)
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
	return false
}

// read hands each frame of the peer's sockets, one after the other, to onPush (peer
// messages) or onOther; with failover it reconnects when a socket ends, until ctx ends.
func (p *peer) read(ctx context.Context, failover bool, onPush func(client.Frame), onOther func()) {
	for {
		c := p.current()
		for f := range c.Frames {
			if f.Type() == "push" && f.Str("subtype") != "system" {
				onPush(f)
				if p.ack {
					// Acknowledged once recorded; a lost ack (the socket or its instance dies
					// first) makes the broker push it again: a duplicate, never a loss.
					_ = c.Write(ctx, map[string]any{"type": "client_ack", "messageId": f.Str("messageId")})
				}
			} else {
				onOther()
			}
		}
		if !failover || ctx.Err() != nil || !p.redial(ctx) {
			return
		}
	}
}

// send sends m from p; with failover a send whose socket is lost before its ack is sent
// again, with the same clientMessageId (the broker stores it once), on the next socket.
func (p *peer) send(ctx context.Context, failover bool, m client.Message) (client.Frame, error) {
	for {
		c := p.current()
		ack, err := c.Send(ctx, m)
		if err == nil || !failover || ctx.Err() != nil {
			return ack, err
		}
		resends.Add(1)
		for p.current() == c && ctx.Err() == nil { // the reader reconnects
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// failoverNote reports the reconnects and resends of a -failover run on stderr.
func failoverNote() {
	fmt.Fprintf(os.Stderr, "meshload: failover: %d reconnects, %d sends repeated after a lost socket\n", failovers.Load(), resends.Load())
}

// failovers and resends count a -failover run's reconnects and repeated sends.
var failovers, resends atomic.Int64
