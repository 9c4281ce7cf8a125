package session

import (
	"net/http"
	"testing"

	"github.com/meshbroker/meshbroker/internal/protocol"
)

// FuzzParseHookBody: any bytes give a validated request, an ignored event, or a 400 with
// one of the documented error texts — never a panic, never an out-of-bounds field.
func FuzzParseHookBody(f *testing.F) {
	for _, s := range []string{
		`{"cwd":"/w","pid":12,"status":"idle","session_id":"s"}`,
		`{"session_id":"s","cwd":"/w","hook_event_name":"SessionEnd"}`,
		`{"session_id":"s","cwd":"/w","hook_event_name":"Notification"}`,
		`{"cwd":"/w","status":"dnd","pid":null}`,
		`{"cwd":"/w","status":"working","pid":1.5}`,
		`{"cwd":"/w","status":"working","pid":"7"}`,
		`{"cwd":"","status":"idle"}`,
		`{"cwd":123}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	texts := map[string]bool{
		"invalid JSON": true, "cwd and status required": true, "status must be idle, working or dnd": true,
		"pid must be an integer": true, "cwd or session_id too long": true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, ignored, herr := parseHookBody(data)
		switch {
		case herr != nil:
			if herr.status != http.StatusBadRequest || !texts[herr.text] {
				t.Fatalf("refusal %d %q is not a documented one", herr.status, herr.text)
			}
		case ignored:
		default:
			if req.cwd == "" || len(req.cwd) > protocol.MaxCwdBytes || len(req.sessionID) > protocol.MaxSessionIDBytes {
				t.Fatalf("accepted out-of-bounds request %+v", req)
			}
			switch req.status {
			case "idle", "working", "dnd", "end":
			default:
				t.Fatalf("accepted status %q", req.status)
			}
		}
	})
}
