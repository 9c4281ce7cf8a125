// Package brokertest runs real broker instances (app.Serve, real sockets) inside a test,
// against a test database, and provisions meshes for them.
package brokertest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/app"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/config"
)

// Instance is a running broker.
type Instance struct {
	HTTP string // http://127.0.0.1:port
	WS   string // ws://127.0.0.1:port/ws
	stop func() error
}

// Stop drains the instance and returns Serve's error (idempotent).
func (i *Instance) Stop() error { return i.stop() }

// Start runs app.Serve with env (DATABASE_URL among it) on a free port until the test ends,
// and returns once the instance answers 200 on /health/ready.
func Start(t testing.TB, env map[string]string) *Instance {
	t.Helper()
	inst := Launch(t, env)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(inst.HTTP + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return inst
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance not ready within 15 s (last: %v %v)", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Launch is Start without waiting for readiness (for tests of an instance that is not ready).
func Launch(t testing.TB, env map[string]string) *Instance {
	t.Helper()
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Port = 0
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a net.Addr) { addrCh <- a })
	}()
	select {
	case a := <-addrCh:
		port := strconv.Itoa(a.(*net.TCPAddr).Port)
		var once sync.Once
		var serveErr error
		inst := &Instance{HTTP: "http://127.0.0.1:" + port, WS: "ws://127.0.0.1:" + port + "/ws"}
		inst.stop = func() error {
			once.Do(func() {
				cancel()
				select {
				case serveErr = <-done:
				case <-time.After(cfg.DrainTimeout + 10*time.Second):
					t.Error("Serve did not return after cancel")
				}
			})
			return serveErr
		}
		t.Cleanup(func() { _ = inst.Stop() })
		return inst
	case err := <-done:
		cancel()
		t.Fatalf("Serve failed to start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("Serve did not start listening within 60 s")
	}
	return nil
}

// Mesh creates a mesh with the named members and returns their identities.
func Mesh(t testing.TB, q *db.Queries, names ...string) map[string]client.Identity {
	t.Helper()
	ctx := context.Background()
	m, err := admin.CreateMesh(ctx, q, "test mesh")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]client.Identity{}
	for _, n := range names {
		pub, sec := client.NewKey()
		mem, err := admin.AddMember(ctx, q, m.MeshID, pub, n, "member")
		if err != nil {
			t.Fatal(err)
		}
		out[n] = client.Identity{MeshID: m.MeshID, MemberID: mem.MemberID, Pubkey: pub, Secret: sec}
	}
	return out
}
