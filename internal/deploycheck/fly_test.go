package deploycheck

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/meshbroker/meshbroker/internal/config"
	"github.com/meshbroker/meshbroker/internal/migrate"
)

type flyConfig struct {
	KillSignal  string `toml:"kill_signal"`
	KillTimeout string `toml:"kill_timeout"`
	Deploy      struct {
		ReleaseCommand string `toml:"release_command"`
	} `toml:"deploy"`
	Env         map[string]string `toml:"env"`
	HTTPService struct {
		InternalPort     int    `toml:"internal_port"`
		ForceHTTPS       bool   `toml:"force_https"`
		AutoStopMachines string `toml:"auto_stop_machines"`
		Concurrency      struct {
			Type      string `toml:"type"`
			SoftLimit int    `toml:"soft_limit"`
			HardLimit int    `toml:"hard_limit"`
		} `toml:"concurrency"`
		Checks []struct {
			Method string `toml:"method"`
			Path   string `toml:"path"`
		} `toml:"checks"`
	} `toml:"http_service"`
	Metrics struct {
		Port int    `toml:"port"`
		Path string `toml:"path"`
	} `toml:"metrics"`
}

func loadFly(t *testing.T) flyConfig {
	t.Helper()
	var fc flyConfig
	if _, err := toml.DecodeFile("../../fly.toml", &fc); err != nil {
		t.Fatalf("parse fly.toml: %v", err)
	}
	return fc
}

func TestFlyTomlAgreesWithConfig(t *testing.T) {
	fc := loadFly(t)
	defaults, err := config.Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	// The configuration the machines actually run with: defaults overridden by [env].
	deployed, err := config.Load(func(k string) string { return fc.Env[k] })
	if err != nil {
		t.Fatalf("fly.toml [env] is not a valid configuration: %v", err)
	}

	if fc.HTTPService.InternalPort != defaults.Port || fc.HTTPService.InternalPort != deployed.Port {
		t.Errorf("internal_port %d, BROKER_PORT default %d, deployed %d: must agree",
			fc.HTTPService.InternalPort, defaults.Port, deployed.Port)
	}
	if !fc.HTTPService.ForceHTTPS {
		t.Error("http_service.force_https must be true (peers connect over wss)")
	}
	if fc.HTTPService.AutoStopMachines != "off" {
		t.Errorf(`auto_stop_machines = %q, want "off": the proxy would stop machines holding sockets`, fc.HTTPService.AutoStopMachines)
	}
	cc := fc.HTTPService.Concurrency
	if cc.Type != "connections" {
		t.Errorf(`concurrency type %q, want "connections" (WebSockets are connections)`, cc.Type)
	}
	if cc.HardLimit != defaults.MaxConnectionsPerInstance || cc.HardLimit != deployed.MaxConnectionsPerInstance {
		t.Errorf("hard_limit %d, MAX_CONNECTIONS_PER_INSTANCE default %d, deployed %d: must agree",
			cc.HardLimit, defaults.MaxConnectionsPerInstance, deployed.MaxConnectionsPerInstance)
	}
	if cc.SoftLimit <= 0 || cc.SoftLimit >= cc.HardLimit {
		t.Errorf("soft_limit %d must be positive and below hard_limit %d", cc.SoftLimit, cc.HardLimit)
	}
	if fc.Deploy.ReleaseCommand != "broker migrate up" {
		t.Errorf(`release_command %q, want "broker migrate up"`, fc.Deploy.ReleaseCommand)
	}
	found := false
	for _, c := range fc.HTTPService.Checks {
		if c.Path == "/health/ready" && (c.Method == "" || c.Method == "GET") {
			found = true
		}
	}
	if !found {
		t.Error("no [[http_service.checks]] on GET /health/ready")
	}
	if fc.KillSignal != "SIGTERM" {
		t.Errorf("kill_signal %q, want SIGTERM (the broker drains on it)", fc.KillSignal)
	}
	kill, err := time.ParseDuration(fc.KillTimeout)
	if err != nil {
		t.Fatalf("kill_timeout %q: %v", fc.KillTimeout, err)
	}
	if kill <= deployed.DrainTimeout {
		t.Errorf("kill_timeout %s must exceed DRAIN_TIMEOUT %s", kill, deployed.DrainTimeout)
	}
	if fc.Metrics.Port == 0 || fc.Metrics.Port == fc.HTTPService.InternalPort {
		t.Errorf("[metrics] port %d must be its own port", fc.Metrics.Port)
	}
	if deployed.MetricsPort != fc.Metrics.Port || fc.Metrics.Path != "/metrics" {
		t.Errorf("[metrics] %d%s but METRICS_PORT=%d: the broker must serve what Fly scrapes",
			fc.Metrics.Port, fc.Metrics.Path, deployed.MetricsPort)
	}
}

// The pin must name the newest migration, or a release could route traffic to machines on
// a schema that lacks it.
func TestFlyTomlPinsTheNewestMigration(t *testing.T) {
	fc := loadFly(t)
	pin, err := strconv.ParseInt(fc.Env["EXPECTED_MIGRATION"], 10, 64)
	if err != nil {
		t.Fatalf("fly.toml [env] EXPECTED_MIGRATION %q: %v", fc.Env["EXPECTED_MIGRATION"], err)
	}
	if latest := migrate.LatestVersion(); pin != latest {
		t.Fatalf("fly.toml pins EXPECTED_MIGRATION=%d but the newest migration is %d", pin, latest)
	}
	if _, err := os.Stat("../../Dockerfile"); err != nil {
		t.Errorf("fly.toml builds from Dockerfile, which is missing: %v", err)
	}
}
