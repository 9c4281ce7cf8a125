package protocol

import (
	"encoding/json"
	"testing"
)

// FuzzDecode: no input panics, and whatever decodes without error re-encodes.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"type":"hello","meshId":"m","memberId":"u","pubkey":"ab","sessionId":"s","pid":1,"cwd":"/","timestamp":1,"signature":"ff"}`,
		`{"type":"send","targetSpec":"*","priority":"now","nonce":"n","ciphertext":"c"}`,
		`{"type":"client_ack","messageId":"x"}`,
		`{"type":"set_status","status":"idle"}`,
		`{"type":"set_summary","summary":"s"}`,
		`{"type":"set_visible","visible":true,"_reqId":"r"}`,
		`{"type":"set_profile","avatar":"a"}`,
		`{"type":"set_stats","stats":{"toolCalls":1}}`,
		`{"type":"join_group","name":"g"}`,
		`{"type":"leave_group","name":"g"}`,
		`{"type":"list_peers","_reqId":1}`,
		`{"type":"message_status","messageId":"m"}`,
		`{"type":"audit_query","limit":1}`,
		`{"type":"audit_verify"}`,
		`{"type":"mystery"}`,
		`{"type":"hello","timestamp":"soon","pid":1e309}`,
		`{"type":"send","targetSpec":{"nested":[1,2,3]}}`,
		"\xff", `[]`, `{}`, `{"type":null}`, `{"type":"hello","groups":[{"name":5}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if err != nil {
			return
		}
		if fr.Body != nil {
			if _, err := json.Marshal(fr.Body); err != nil {
				t.Fatalf("decoded body does not re-encode: %v", err)
			}
		}
		if fr.ReqID != nil && !json.Valid(fr.ReqID) {
			t.Fatalf("echoable _reqId is not valid JSON: %q", fr.ReqID)
		}
	})
}
