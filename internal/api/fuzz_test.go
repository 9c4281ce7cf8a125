package api_test

import (
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/ids"
)

// FuzzRouteBodies sends arbitrary bodies to every route of the table, with the owner's
// bearer so they get past authentication: whatever the body, the answer is never a 5xx
// (bad input is the client's fault, not the broker's) and the process survives. One
// broker serves the whole run. Seeds run in every `go test`;
// `go test -fuzz FuzzRouteBodies ./internal/api` explores.
func FuzzRouteBodies(f *testing.F) {
	e := newEnv(f, nil)
	o := e.createMesh("fuzz")
	bob, _ := e.member(o.meshID, "bob", "member")
	fill := strings.NewReplacer("{slug}", o.slug, "{meshId}", o.meshID, "{memberId}", bob.MemberID,
		"{presenceId}", ids.New(), "{code}", "ABCDEFGH")
	routes := api.Routes()
	seeds := []string{``, `{}`, `null`, `[]`, `"x"`, `{"name":1}`, `{"grants":{"x":null}}`, `{"grants":[]}`,
		`{"name":"n","pubkey":"` + strings.Repeat("a", 64) + `","slug":"` + strings.Repeat("é", 300) + `"}`,
		`{"selfEditable":{"roleTag":"yes"}}`, `{"groups":[{"name":""}]}`, `{"permissions":{"canInvite":"x"}}`,
		`{"displayName":"` + strings.Repeat("x", 200) + `"}`, `{"member_id":"x","permissions":{"canInvite":true}}`,
		`{"invite_token":"!!","invite_payload":{},"peer_pubkey":"zz","display_name":"a"}`, `{"sync_token":"a.b.c"}`,
		`{"token":{}}`, `{"user_id":"` + strings.Repeat("u", 5000) + `"}`, "\xff\xfe", `{"a":` + strings.Repeat("[", 10000)}
	// Routes that delete go last, so the seeds of the others still find the mesh.
	for _, deleting := range []bool{false, true} {
		for i, rt := range routes {
			if (rt.Method == "DELETE") != deleting {
				continue
			}
			for _, s := range seeds {
				f.Add(uint8(i), []byte(s))
			}
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := routes[int(route)%len(routes)]
		r := callAt(t, e.inst.HTTP, rt.Method, fill.Replace(rt.Pattern), o.ownerToken, body)
		if r.Status >= 500 {
			t.Fatalf("%s %s with body %q: %d %s", rt.Method, rt.Pattern, body, r.Status, r.Raw)
		}
	})
}
