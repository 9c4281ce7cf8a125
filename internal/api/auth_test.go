package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// An unknown path under the API's prefixes is a JSON 404, and a known path with the wrong
// method a JSON 405.
func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t, nil)
	r := e.call("GET", "/cli/nope", "", nil)
	expect(t, r, http.StatusNotFound, "not_found")
	r = e.call("OPTIONS", "/cli/meshes", "", nil)
	if r.Status != http.StatusNoContent || r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("OPTIONS: %d %v", r.Status, r.Header)
	}
}

// Every answer of the account routes is counted by route and status.
func TestAPIRequestsAreCounted(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 2; i++ {
		expect(t, e.call("POST", "/cli/mesh/create", "", map[string]any{"name": "x"}), http.StatusUnauthorized, "missing_bearer_token")
	}
	_, token := e.user("m@example.com")
	expect(t, e.call("GET", "/cli/meshes", token, nil), http.StatusOK, "")
	r := e.call("GET", "/metrics", "", nil)
	for _, want := range []string{
		`broker_api_requests_total{code="401",route="POST /cli/mesh/create"} 2`,
		`broker_api_requests_total{code="200",route="GET /cli/meshes"} 1`,
	} {
		if !strings.Contains(r.Raw, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
