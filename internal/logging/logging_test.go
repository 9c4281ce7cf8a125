package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOneJSONObjectPerLine(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelDebug)
	log.Debug("d", "k", 1)
	log.Info("multi\nline message", "path", "/x")
	log.Warn("w", slog.Group("g", "a", "b"))
	log.Error("e", "err", "boom")

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines, got %d: %q", len(lines), buf.String())
	}
	wantLevels := []string{"debug", "info", "warn", "error"}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not one JSON object: %v: %s", i, err, line)
		}
		if rec["level"] != wantLevels[i] || rec["component"] != "broker" || rec["msg"] == nil {
			t.Errorf("line %d: %v", i, rec)
		}
		ts, _ := rec["ts"].(string)
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", ts); err != nil {
			t.Errorf("line %d: ts %q is not ISO-8601 UTC with ms: %v", i, ts, err)
		}
	}
}

func TestLevelFilterAndParse(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelWarn).Info("hidden")
	if buf.Len() != 0 {
		t.Fatalf("info logged at warn level: %s", buf.String())
	}
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel accepted an unknown level")
	}
}
