package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/internal/health"
	"github.com/meshbroker/meshbroker/internal/metrics"
	"github.com/meshbroker/meshbroker/internal/migrate"
	"github.com/meshbroker/meshbroker/internal/server"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type fixture struct {
	url     string
	checker *health.Checker
}

func newFixture(t *testing.T, expected int64) fixture {
	t.Helper()
	d := testdb.New(t)
	mig, err := migrate.FromPool(d.Pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mig.Close() })
	m := metrics.New()
	checker := health.NewChecker(d.Pool, mig, expected, m.DBHealthy)
	srv := server.New(server.Deps{Checker: checker, Metrics: m, Logger: slog.New(slog.DiscardHandler), Version: "v-test", GitSHA: "abc"})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return fixture{url: ts.URL, checker: checker}
}

func get(t *testing.T, method, url string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, url, b)
		}
	}
	return resp.StatusCode, body, resp.Header
}

func TestHealthAndReady(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	code, body, _ := get(t, "GET", f.url+"/health")
	if code != 200 || body["status"] != "ok" || body["db"] != "up" || body["version"] != "v-test" || body["gitSha"] != "abc" {
		t.Fatalf("/health: %d %v", code, body)
	}
	if up, ok := body["uptime"].(float64); !ok || up < 0 {
		t.Fatalf("/health uptime: %v", body["uptime"])
	}
	code, body, _ = get(t, "GET", f.url+"/health/ready")
	if code != 200 || body["status"] != "ready" || body["migration"] != float64(migrate.LatestVersion()) {
		t.Fatalf("/health/ready: %d %v", code, body)
	}
}

func TestReadyFailsBelowMigrationPin(t *testing.T) {
	t.Parallel()
	latest := migrate.LatestVersion()
	f := newFixture(t, latest+1)
	code, body, _ := get(t, "GET", f.url+"/health/ready")
	if code != 503 || body["status"] != "not_ready" || body["reason"] != "migration_missing" ||
		body["migration"] != float64(latest) || body["expected"] != float64(latest+1) {
		t.Fatalf("pin above the schema: %d %v", code, body)
	}
	f = newFixture(t, latest)
	if code, body, _ := get(t, "GET", f.url+"/health/ready"); code != 200 {
		t.Fatalf("pin at the schema version: %d %v", code, body)
	}
}

func TestReadyFailsWhileDraining(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	f.checker.SetDraining()
	code, body, _ := get(t, "GET", f.url+"/health/ready")
	if code != 503 || body["reason"] != "draining" {
		t.Fatalf("draining: %d %v", code, body)
	}
	// Liveness is unaffected by draining.
	if code, _, _ := get(t, "GET", f.url+"/health"); code != 200 {
		t.Fatalf("/health while draining: %d", code)
	}
}

func TestExtraReadinessCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	f.checker.AddCheck(health.Check{Reason: "listener_down", Fn: func(context.Context) error { return io.ErrClosedPipe }})
	code, body, _ := get(t, "GET", f.url+"/health/ready")
	if code != 503 || body["reason"] != "listener_down" {
		t.Fatalf("failing extra check: %d %v", code, body)
	}
}

func TestErrorsAreJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	code, body, _ := get(t, "GET", f.url+"/nope")
	if code != 404 || body["error"] != "not_found" {
		t.Fatalf("unknown route: %d %v", code, body)
	}
	code, body, hdr := get(t, "POST", f.url+"/health")
	if code != 405 || body["error"] != "method_not_allowed" || hdr.Get("Allow") != "GET" {
		t.Fatalf("POST /health: %d %v %v", code, body, hdr)
	}
	code, _, hdr = get(t, "OPTIONS", f.url+"/anything")
	if code != 204 || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("OPTIONS: %d %v", code, hdr)
	}
	if code, _, _ := get(t, "HEAD", f.url+"/health"); code != 200 {
		t.Fatalf("HEAD /health: %d", code)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	resp, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"broker_connections_total 0", "broker_db_healthy", "go_goroutines"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
