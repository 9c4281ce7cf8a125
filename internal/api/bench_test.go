package api_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/invite"
)

// BenchmarkAccountRoutes measures the account surface over real HTTP on one instance, with
// 16 parallel clients (2 cores × 8): an authenticated read (the bearer lookup plus the mesh listing), and a
// join (signature check, invite CAS, member insert and audit append in one transaction).
// `go test -run X -bench AccountRoutes -benchtime 5s ./internal/api` (docs/benchmarks.md).
func BenchmarkAccountRoutes(b *testing.B) {
	e := newEnv(b, nil)
	o := e.createMesh("bench")
	b.Run("authenticated-read", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r := callAt(b, e.inst.HTTP, "GET", "/cli/meshes", o.ownerToken, nil); r.Status != http.StatusOK {
					b.Fatalf("%d %s", r.Status, r.Raw)
				}
			}
		})
	})
	b.Run("join", func(b *testing.B) {
		inv := e.call("POST", "/cli/mesh/"+o.slug+"/invite", o.ownerToken, map[string]any{})
		if _, err := e.d.Pool.Exec(b.Context(), `UPDATE invites SET max_uses = 1000000000 WHERE code = $1`, str(inv, "code")); err != nil {
			b.Fatal(err)
		}
		tok := str(inv, "token")
		p, err := invite.DecodeToken(tok)
		if err != nil {
			b.Fatal(err)
		}
		keys := make([]string, b.N)
		for i := range keys {
			keys[i], _ = client.NewKey()
		}
		var next int64
		var mu = make(chan struct{}, 1)
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu <- struct{}{}
				k := keys[next]
				next++
				<-mu
				r := callAt(b, e.inst.HTTP, "POST", "/join", "", map[string]any{"invite_token": tok, "invite_payload": p,
					"peer_pubkey": k, "display_name": "m" + strconv.FormatInt(next, 10)})
				if r.Status != http.StatusOK {
					b.Fatalf("%d %s", r.Status, r.Raw)
				}
			}
		})
	})
}
