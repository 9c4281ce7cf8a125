package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/migrate"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// startBroker runs a broker instance (not waiting for readiness) and returns its base URL
// and a stop function that drains it and returns Serve's error.
func startBroker(t *testing.T, env map[string]string) (string, func() error) {
	t.Helper()
	inst := brokertest.Launch(t, env)
	return inst.HTTP, inst.Stop
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func fetch(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

// waitFor polls url until it answers wantCode (and wantReason, if set), or fails the test.
func waitFor(t *testing.T, url string, wantCode int, wantReason string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	var code int
	var body map[string]any
	for time.Now().Before(deadline) {
		code, body = fetch(t, url)
		if code == wantCode && (wantReason == "" || body["reason"] == wantReason) {
			return body
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: want %d %q within %s, last got %d %v", url, wantCode, wantReason, within, code, body)
	return nil
}

// Postgres stopped under a running broker: liveness stays 200 with db "down", readiness
// turns 503 db_down, and both recover when Postgres returns, without restarting the broker.
func TestReadinessFollowsDatabaseOutage(t *testing.T) {
	t.Parallel()
	cluster := testdb.NewCluster(t)
	base, stop := startBroker(t, map[string]string{"DATABASE_URL": cluster.URL(), "AUTO_MIGRATE": "1"})

	body := waitFor(t, base+"/health/ready", 200, "", 10*time.Second)
	if body["migration"] != float64(migrate.LatestVersion()) {
		t.Fatalf("ready body: %v", body)
	}
	if err := cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, base+"/health/ready", 503, "db_down", 10*time.Second)
	code, hb := fetch(t, base+"/health")
	if code != 200 || hb["db"] != "down" || hb["status"] != "ok" {
		t.Fatalf("/health during outage: %d %v", code, hb)
	}
	_, metrics := fetchText(t, base+"/metrics")
	if !strings.Contains(metrics, "broker_db_healthy 0") {
		t.Errorf("broker_db_healthy not 0 during outage")
	}

	if err := cluster.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, base+"/health/ready", 200, "", 15*time.Second)
	if code, hb := fetch(t, base+"/health"); code != 200 || hb["db"] != "up" {
		t.Fatalf("/health after recovery: %d %v", code, hb)
	}
	_, metrics = fetchText(t, base+"/metrics")
	for _, want := range []string{"broker_db_healthy 1", "pgxpool_total_conns", "process_resident_memory_bytes"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve returned %v after drain", err)
	}
}

func fetchText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Without AUTO_MIGRATE a broker on an unmigrated database serves, but is not ready under
// a pin, and says why.
func TestNoAutoMigrateOnExternalDatabase(t *testing.T) {
	t.Parallel()
	d := testdb.NewEmpty(t)
	base, _ := startBroker(t, map[string]string{"DATABASE_URL": d.URL, "EXPECTED_MIGRATION": itoa(int(migrate.LatestVersion()))})
	body := waitFor(t, base+"/health/ready", 503, "migration_missing", 10*time.Second)
	if body["migration"] != float64(0) {
		t.Fatalf("unmigrated database reported migration %v", body["migration"])
	}
}

// Cancelling Serve (what SIGTERM does) closes the listener and returns nil.
func TestDrainStopsListening(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	base, stop := startBroker(t, map[string]string{"DATABASE_URL": d.URL, "DRAIN_TIMEOUT": "5s"})
	waitFor(t, base+"/health/ready", 200, "", 10*time.Second)
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("drain took %s, longer than DRAIN_TIMEOUT", took)
	}
	if _, err := http.Get(base + "/health"); err == nil {
		t.Fatal("still accepting after drain")
	}
}

// METRICS_PORT serves /metrics (and nothing else) on its own listener, for Fly's scraper.
func TestMetricsPort(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	base, _ := startBroker(t, map[string]string{"DATABASE_URL": d.URL, "METRICS_PORT": itoa(port)})
	waitFor(t, base+"/health/ready", 200, "", 10*time.Second)
	metricsBase := "http://127.0.0.1:" + itoa(port)
	code, text := fetchText(t, metricsBase+"/metrics")
	if code != 200 || !strings.Contains(text, "broker_connections_total 0") {
		t.Fatalf("metrics port /metrics: %d", code)
	}
	if code, _ := fetchText(t, metricsBase+"/health"); code != 404 {
		t.Fatalf("metrics port serves /health: %d", code)
	}
}
