package presence

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
		req, ignored, herr := ParseHookBody(data)
		switch {
		case herr != nil:
			if herr.Status != http.StatusBadRequest || !texts[herr.Text] {
				t.Fatalf("refusal %d %q is not a documented one", herr.Status, herr.Text)
			}
		case ignored:
		default:
			if req.Cwd == "" || len(req.Cwd) > protocol.MaxCwdBytes || len(req.SessionID) > protocol.MaxSessionIDBytes {
				t.Fatalf("accepted out-of-bounds request %+v", req)
			}
			switch req.Status {
			case "idle", "working", "dnd", "end":
			default:
				t.Fatalf("accepted status %q", req.Status)
			}
		}
	})
}
