// Package logging builds the broker's structured logger: log/slog JSON on stderr, one
// object per line, with the field names the original broker used (ts, level, component,
// msg) so existing log pipelines keep working.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel maps LOG_LEVEL values (debug, info, warn, error) to slog levels.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// New returns a JSON logger writing to w at the given level. Every record carries
// component="broker"; the time key is "ts" and levels are lower-case.
func New(w io.Writer, level slog.Level) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "ts"
				a.Value = slog.StringValue(a.Value.Time().UTC().Format("2006-01-02T15:04:05.000Z"))
			case slog.LevelKey:
				a.Value = slog.StringValue(strings.ToLower(a.Value.Any().(slog.Level).String()))
			}
			return a
		},
	})
	return slog.New(h).With(slog.String("component", "broker"))
}
