package api_test

import (
	"net/http"
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
