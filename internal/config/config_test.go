package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"Port", c.Port, 7900},
		{"DatabaseURL", c.DatabaseURL, ""},
		{"DataDir", c.DataDir, "./.meshbroker/pg"},
		{"AutoMigrate", c.AutoMigrate, false},
		{"ExpectedMigration", c.ExpectedMigration, int64(0)},
		{"DrainTimeout", c.DrainTimeout, 20 * time.Second},
		{"LogLevel", c.LogLevel, "info"},
		{"StatusTTL", c.StatusTTL, 60 * time.Second},
		{"HookFreshWindow", c.HookFreshWindow, 30 * time.Second},
		{"MaxConnectionsPerMesh", c.MaxConnectionsPerMesh, 100},
		{"MaxConnectionsPerInstance", c.MaxConnectionsPerInstance, 10000},
		{"MaxMessageBytes", c.MaxMessageBytes, 65536},
		{"HookRateLimitPerMin", c.HookRateLimitPerMin, 30},
		{"Env", c.Env, "development"},
		{"BrokerURL", c.BrokerURL, "wss://ic.claudemesh.com/ws"},
		{"PublicURL", c.PublicURL, "https://ic.claudemesh.com"},
		{"AppURL", c.AppURL, "https://claudemesh.com"},
		{"EmailFrom", c.EmailFrom, "noreply@claudemesh.com"},
		{"PresenceRetention", c.PresenceRetention, 720 * time.Hour},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if !c.Embedded() {
		t.Error("no DATABASE_URL should select the embedded database")
	}
}

func TestValidValues(t *testing.T) {
	c, err := Load(env(map[string]string{
		"BROKER_PORT":        "8080",
		"DATABASE_URL":       "postgresql://u:p@db:5432/x?sslmode=require",
		"AUTO_MIGRATE":       "true",
		"EXPECTED_MIGRATION": "3",
		"DRAIN_TIMEOUT":      "45",
		"LOG_LEVEL":          "DEBUG",
		"BROKER_LEGACY_AUTH": "1",
		"NODE_ENV":           "production",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || !c.AutoMigrate || c.ExpectedMigration != 3 || c.DrainTimeout != 45*time.Second ||
		c.LogLevel != "debug" || !c.LegacyAuth || c.Env != "production" || c.Embedded() {
		t.Fatalf("unexpected config: %+v", c)
	}
	c, err = Load(env(map[string]string{"DRAIN_TIMEOUT": "1m30s"}))
	if err != nil || c.DrainTimeout != 90*time.Second {
		t.Fatalf("DRAIN_TIMEOUT=1m30s: %v %v", c.DrainTimeout, err)
	}
	c, err = Load(env(map[string]string{"PRESENCE_RETENTION": "3600"}))
	if err != nil || c.PresenceRetention != time.Hour {
		t.Fatalf("PRESENCE_RETENTION=3600 (the floor): %v %v", c.PresenceRetention, err)
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"BROKER_PORT":               "seventy",
		"DATABASE_URL":              "mysql://x",
		"AUTO_MIGRATE":              "maybe",
		"EXPECTED_MIGRATION":        "-1",
		"DRAIN_TIMEOUT":             "soon",
		"LOG_LEVEL":                 "verbose",
		"STATUS_TTL_SECONDS":        "0",
		"MAX_CONNECTIONS_PER_MESH":  "1e3",
		"MAX_MESSAGE_BYTES":         "10",
		"HOOK_RATE_LIMIT_PER_MIN":   "-5",
		"NODE_ENV":                  "staging",
		"BROKER_URL":                "not a url",
		"BROKER_INVITE_V2_ENABLED":  "2",
		"HOOK_FRESH_WINDOW_SECONDS": "x",
		"PRESENCE_RETENTION":        "30m",
		"INSTANCE_HEARTBEAT":        "often",
		"INSTANCE_DEAD_AFTER":       "5s", // under 3 × the 2 s heartbeat
	}
	for name, value := range cases {
		_, err := Load(env(map[string]string{name: value}))
		if err == nil {
			t.Errorf("%s=%q accepted", name, value)
			continue
		}
		if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "expected") {
			t.Errorf("%s=%q: error %q does not name the variable and what it expects", name, value, err)
		}
	}
}

func TestAllErrorsReportedAtOnce(t *testing.T) {
	_, err := Load(env(map[string]string{"BROKER_PORT": "0", "LOG_LEVEL": "loud"}))
	if err == nil || !strings.Contains(err.Error(), "BROKER_PORT") || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Fatalf("want both variables reported, got %v", err)
	}
}

func TestDatabaseURLPasswordNotEchoed(t *testing.T) {
	_, err := Load(env(map[string]string{"DATABASE_URL": "mysql://admin:hunter2@db/x"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error must not echo the password: %v", err)
	}
}

func TestEveryVarIsDeclaredOnce(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range Vars {
		if seen[v.Name] {
			t.Errorf("%s declared twice", v.Name)
		}
		seen[v.Name] = true
		if v.Meaning == "" {
			t.Errorf("%s has no meaning", v.Name)
		}
	}
}
