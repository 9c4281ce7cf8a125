package metrics

import (
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// The original broker's series (reference §9): name, type, help, and pre-registered labels.
var reference = []struct {
	name, typ, help string
	labels          []string
}{
	{"broker_connections_total", "counter", "Total WS connection attempts", nil},
	{"broker_connections_rejected_total", "counter", "WS connections refused (auth failure, capacity, etc.)",
		[]string{`reason="bad_session_pubkey"`, `reason="capacity"`, `reason="timestamp_skew"`, `reason="malformed"`, `reason="bad_signature"`, `reason="unauthorized"`}},
	{"broker_connections_active", "gauge", "Currently connected peers", nil},
	{"broker_messages_routed_total", "counter", "Messages successfully queued + routed",
		[]string{`priority="now"`, `priority="next"`, `priority="low"`, `priority="stream"`}},
	{"broker_messages_rejected_total", "counter", "Messages rejected (size, auth, malformed)",
		[]string{`reason="rate_limit"`, `reason="too_large"`, `reason="no_recipient"`, `reason="parse_or_handler"`}},
	{"broker_messages_dropped_by_grant_total", "counter", "Messages silently dropped because recipient didn't grant sender the required capability",
		[]string{`cap="dm"`, `cap="broadcast"`}},
	{"broker_legacy_auth_hits_total", "counter", "Pre-alpha.36 clients authenticating via body.user_id fallback (remove shim when near zero)", nil},
	{"broker_queue_depth", "gauge", "Undelivered messages currently in the queue", nil},
	{"broker_ttl_sweeps_total", "counter", "TTL sweeper runs completed", []string{`flipped="0"`}},
	{"broker_hook_requests_total", "counter", "POST /hook/set-status requests received", nil},
	{"broker_hook_requests_rate_limited_total", "counter", "POST /hook/set-status rejected by rate limit", nil},
	{"broker_db_healthy", "gauge", "1 if Postgres connection is up, 0 if not", nil},
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestReferenceSeriesPresentFromTheStart(t *testing.T) {
	out := scrape(t, New())
	for _, s := range reference {
		if !strings.Contains(out, "# HELP "+s.name+" "+s.help+"\n") {
			t.Errorf("%s: missing or different HELP", s.name)
		}
		if !strings.Contains(out, "# TYPE "+s.name+" "+s.typ+"\n") {
			t.Errorf("%s: missing TYPE %s", s.name, s.typ)
		}
		if len(s.labels) == 0 {
			if !regexp.MustCompile(`(?m)^` + s.name + ` 0$`).MatchString(out) {
				t.Errorf("%s: no zero sample", s.name)
			}
		}
		for _, l := range s.labels {
			if !strings.Contains(out, s.name+"{"+l+"} 0\n") {
				t.Errorf("%s{%s}: not pre-registered at 0", s.name, l)
			}
		}
	}
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(out, want) {
			t.Errorf("runtime/process collector series %s missing", want)
		}
	}
}

func TestCountersAndGauges(t *testing.T) {
	m := New()
	m.ConnectionsTotal.Inc()
	m.MessagesRouted.WithLabelValues("now").Add(2)
	m.MessagesRouted.WithLabelValues("next").Inc()
	m.QueueDepth.Set(7)
	m.QueueDepth.Set(3) // a gauge set overwrites
	m.TTLSweeps.WithLabelValues(TTLSweepBucket(42)).Inc()
	out := scrape(t, m)
	for _, line := range []string{
		"broker_connections_total 1\n",
		`broker_messages_routed_total{priority="now"} 2` + "\n",
		`broker_messages_routed_total{priority="next"} 1` + "\n",
		"broker_queue_depth 3\n",
		`broker_ttl_sweeps_total{flipped="11-100"} 1` + "\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("missing %q", line)
		}
	}
	sample := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$|^-?Inf|NaN`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !sample.MatchString(line) && !strings.HasSuffix(line, "NaN") && !strings.HasSuffix(line, "Inf") {
			t.Errorf("malformed sample line %q", line)
		}
	}
}

func TestTTLSweepBucket(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 1: "1", 2: "2-10", 10: "2-10", 11: "11-100", 100: "11-100", 101: "101+", 1e6: "101+"} {
		if got := TTLSweepBucket(n); got != want {
			t.Errorf("TTLSweepBucket(%d) = %q, want %q", n, got, want)
		}
	}
}
