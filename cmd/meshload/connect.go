package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/client"
)

// ConnectResult reports -hellos / -idle runs.
type ConnectResult struct {
	Mode         string  `json:"mode"`
	Sockets      int     `json:"sockets"`
	Concurrency  int     `json:"concurrency"`
	Failed       int64   `json:"failed"`
	Seconds      float64 `json:"seconds"`
	HellosPerSec float64 `json:"hellosPerSec"`
	// Reconnect storm (-storm): every socket dropped without a close frame, as when an
	// instance dies, and every peer reconnecting at once inside its grace window.
	StormSeconds      float64 `json:"stormSeconds,omitempty"`
	StormHellosPerSec float64 `json:"stormHellosPerSec,omitempty"`
	StormFailed       int64   `json:"stormFailed,omitempty"`
	RSSBeforeMiB      float64 `json:"rssBeforeMiB,omitempty"`
	RSSConnectedMiB   float64 `json:"rssConnectedMiB,omitempty"`
	RSSAfterMiB       float64 `json:"rssAfterCloseMiB,omitempty"`
	KiBPerSocket      float64 `json:"kibPerSocket,omitempty"`
}

// runConnect provisions n members and opens one authenticated socket each, c at a time:
// the hello rate. With hold > 0 it keeps them idle that long and reports the broker's RSS
// (read from its /metrics) before, while connected and after they all closed.
func runConnect(ctx context.Context, o options, n, c int, hold time.Duration) (ConnectResult, error) {
	pool, err := pgxpool.New(ctx, o.dsn)
	if err != nil {
		return ConnectResult{}, err
	}
	defer pool.Close()
	q := db.New(pool)
	// Peers are spread over meshes of o.meshSize (default 50, below the default
	// MAX_CONNECTIONS_PER_MESH), as a fleet's would be. Peer i is in mesh i mod meshes, so
	// concurrent handshakes come from many meshes, as in a deploy's reconnect storm.
	meshSize := max(1, o.meshSize)
	meshes := make([]string, (n+meshSize-1)/meshSize)
	fmt.Fprintf(os.Stderr, "meshload: provisioning %d members in %d meshes\n", n, len(meshes))
	for j := range meshes {
		mesh, err := admin.CreateMesh(ctx, q, fmt.Sprintf("meshload hellos %d %s", j, time.Now().Format(time.RFC3339Nano)))
		if err != nil {
			return ConnectResult{}, err
		}
		meshes[j] = mesh.MeshID
	}
	ids := make([]client.Identity, n)
	for i := range n {
		meshID := meshes[i%len(meshes)]
		pub, sec := client.NewKey()
		m, err := admin.AddMember(ctx, q, meshID, pub, fmt.Sprintf("peer-%d", i), "member")
		if err != nil {
			return ConnectResult{}, err
		}
		ids[i] = client.Identity{MeshID: meshID, MemberID: m.MemberID, Pubkey: pub, Secret: sec}
	}
	metricsURL := strings.Replace(strings.Replace(strings.TrimSuffix(o.urls[0], "/ws"), "ws://", "http://", 1), "wss://", "https://", 1) + "/metrics"
	res := ConnectResult{Mode: "hellos", Sockets: n, Concurrency: c}
	if hold > 0 {
		res.Mode = "idle"
		res.RSSBeforeMiB = rssMiB(metricsURL)
	}
	conns := make([]*client.Client, n)
	connectAll := func() (time.Duration, int64) {
		var failed atomic.Int64
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range c {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n || ctx.Err() != nil {
						return
					}
					dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					cl, err := client.Dial(dctx, o.urls[i%len(o.urls)], ids[i], client.Options{SessionID: fmt.Sprintf("h-%d", i), Pid: i, Cwd: "/meshload"})
					cancel()
					if err != nil {
						if failed.Add(1) <= 3 {
							fmt.Fprintf(os.Stderr, "meshload: connect %d: %v\n", i, err)
						}
						continue
					}
					conns[i] = cl
					go func() {
						for range cl.Frames { // drain system events
						}
					}()
				}
			}()
		}
		wg.Wait()
		return time.Since(start), failed.Load()
	}
	took, failed := connectAll()
	res.Seconds, res.Failed = took.Seconds(), failed
	res.HellosPerSec = float64(int64(n)-res.Failed) / res.Seconds
	fmt.Fprintf(os.Stderr, "meshload: %d sockets authenticated in %.2fs (%.0f hellos/s), %d failed\n", int64(n)-res.Failed, res.Seconds, res.HellosPerSec, res.Failed)
	if o.storm {
		for i, cl := range conns {
			if cl != nil {
				_ = cl.Drop()
				conns[i] = nil
			}
		}
		time.Sleep(time.Second) // let the broker notice the drops
		took, failed := connectAll()
		res.StormSeconds, res.StormFailed = took.Seconds(), failed
		res.StormHellosPerSec = float64(int64(n)-failed) / took.Seconds()
		fmt.Fprintf(os.Stderr, "meshload: reconnect storm: %d sockets back in %.2fs (%.0f hellos/s)\n", int64(n)-failed, took.Seconds(), res.StormHellosPerSec)
	}
	if hold > 0 {
		time.Sleep(hold)
		res.RSSConnectedMiB = rssMiB(metricsURL)
		if open := int64(n) - res.Failed; open > 0 {
			res.KiBPerSocket = (res.RSSConnectedMiB - res.RSSBeforeMiB) * 1024 / float64(open)
		}
	}
	for _, cl := range conns {
		if cl != nil {
			_ = cl.Close()
		}
	}
	if hold > 0 {
		time.Sleep(hold)
		res.RSSAfterMiB = rssMiB(metricsURL)
	}
	return res, nil
}

// rssMiB reads process_resident_memory_bytes from a broker's /metrics.
func rssMiB(url string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f / (1 << 20)
		}
	}
	return 0
}
