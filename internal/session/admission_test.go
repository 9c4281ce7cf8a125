package session_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Tests of issue 9's finding D: sockets are refused before the upgrade once the instance
// holds MAX_CONNECTIONS_PER_INSTANCE, or one IP holds MAX_PREAUTH_PER_IP sockets without a
// hello; a socket without a hello is closed with 1008 handshake_timeout; one that sends
// frames other than hello for too long is closed with 1008 no_hello. Each refusal counted.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "bob")
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "MAX_CONNECTIONS_PER_INSTANCE": "4",
		"MAX_PREAUTH_PER_IP": "2", "HANDSHAKE_TIMEOUT": "1s"})
	ctx := within(t, 30*time.Second)

	// Frames other than hello, past the allowance: closed with no_hello.
	frames := make([]string, 12)
	for i := range frames {
		frames[i] = `{"type":"list_peers"}`
	}
	if code, reason := closeStatus(ctx, t, inst.WS, frames...); code != websocket.StatusPolicyViolation || reason != "no_hello" {
		t.Fatalf("a socket that never says hello: closed %d %q, want 1008 no_hello", code, reason)
	}

	// Two sockets of this IP without hello; the third is refused before the upgrade.
	// (The no_hello socket above frees its slot when the server has finished with it, which
	// may be a moment after the client saw the close: wait for it rather than race it.)
	var silent []*websocket.Conn
	for range 2 {
		var c *websocket.Conn
		waitFor(t, ctx, "a pre-hello slot", func() bool {
			var err error
			c, _, err = websocket.Dial(ctx, inst.WS, nil)
			return err == nil
		})
		defer c.CloseNow()
		silent = append(silent, c)
	}
	// (The retries above may have been refused too: the counter is checked across this dial.)
	refusedBefore := counterValue(t, metricsText(t, inst.HTTP), `broker_connections_rejected_total{reason="preauth_per_ip"}`)
	_, resp, err := websocket.Dial(ctx, inst.WS, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third socket without hello from one IP: %v %v, want 429 with Retry-After", resp, err)
	}
	if after := counterValue(t, metricsText(t, inst.HTTP), `broker_connections_rejected_total{reason="preauth_per_ip"}`); after != refusedBefore+1 {
		t.Fatalf("preauth_per_ip refusals went %v → %v for one refused socket", refusedBefore, after)
	}
	// The silent ones are closed at the handshake deadline, with the documented close frame.
	for _, c := range silent {
		_, _, err := c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), "handshake_timeout") {
			t.Fatalf("silent socket: %v, want 1008 handshake_timeout", err)
		}
	}

	// Four authenticated sockets (each frees its pre-hello slot); the fifth socket is refused.
	var four []*client.Client
	for i := range 4 {
		c, err := client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "b" + string(rune('0'+i))})
		if err != nil {
			t.Fatalf("socket %d: %v", i+1, err)
		}
		defer c.Close()
		four = append(four, c)
	}
	_, resp, err = websocket.Dial(ctx, inst.WS, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fifth socket: %v %v, want 503 with Retry-After", resp, err)
	}
	m := metricsText(t, inst.HTTP)
	for _, want := range []string{
		`broker_connections_rejected_total{reason="no_hello"} 1`,
		`broker_connections_rejected_total{reason="handshake_timeout"} 2`,
		`broker_connections_rejected_total{reason="instance_full"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	// A socket that ends gives its slot back, whichever way it ends.
	_ = four[0].Close()
	_ = four[1].Drop()
	for i := range 2 {
		var c *client.Client
		waitFor(t, ctx, "a freed slot", func() bool {
			c, err = client.Dial(ctx, inst.WS, ids["bob"], client.Options{SessionID: "again" + string(rune('0'+i))})
			return err == nil
		})
		defer c.Close()
	}
}

// counterValue reads one series' value from a /metrics body (0 when absent).
func counterValue(t *testing.T, metrics, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}
