package main

// Channel notifications: where a Claude Code session listens to an MCP server's channel
// (the server declares the experimental capability "claude/channel"; the session must have
// been started with channels enabled), meshpeer mcp tells it the moment a message arrives,
// without waiting for the next prompt or stop hook. Sessions without channels ignore the
// notification (an unknown JSON-RPC notification). It carries no peer text — only who sent
// how many — and points at mesh_inbox, so a peer cannot put words before the model this
// way and nothing is shown twice (the inbox still marks what was read).
//
// The go-sdk has no API for a custom notification, so it is written as one JSON-RPC line
// beside the SDK's own, through lineWriter: the SDK writes each message with one Write, and
// lineWriter makes each Write whole.

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/meshbroker/meshbroker/internal/inbox"
)

const (
	channelCapability = "claude/channel"
	channelMethod     = "notifications/claude/channel"
)

// lineWriter serialises writes to the MCP client's stdin.
type lineWriter struct {
	mu sync.Mutex
	w  io.WriteCloser
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lineWriter) Close() error { return l.w.Close() }

// notifyChannel writes one channel notification for messages that just arrived.
func (l *lineWriter) notifyChannel(msgs []inbox.Message) {
	if len(msgs) == 0 {
		return
	}
	from := short(msgs[0].From)
	content := fmt.Sprintf("%d new message(s) on the mesh from %s: read them with the mesh_inbox tool.", len(msgs), from)
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": channelMethod, "params": map[string]any{
		"content": content,
		"meta":    map[string]string{"source": "meshpeer", "kind": msgs[0].Kind, "message_id": msgs[0].ID},
	}})
	if err != nil {
		return
	}
	_, _ = l.Write(append(b, '\n'))
}
