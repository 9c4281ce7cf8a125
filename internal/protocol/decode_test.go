package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeHello(t *testing.T) {
	f, err := Decode([]byte(`{"type":"hello","meshId":"m","memberId":"u","pubkey":"ab","sessionPubkey":"cd",
		"sessionId":"s1","pid":4242,"cwd":"/w","groups":[{"name":"ops","role":"lead"}],
		"capabilities":["client_ack"],"timestamp":1763900000123,"signature":"ff","_reqId":"r1"}`))
	if err != nil {
		t.Fatal(err)
	}
	h, ok := f.Body.(*Hello)
	if !ok || f.Type != "hello" || string(f.ReqID) != `"r1"` {
		t.Fatalf("frame %+v", f)
	}
	if h.MeshID != "m" || h.Pid != 4242 || !h.HasTimestamp || h.Timestamp != 1763900000123 ||
		len(h.Groups) != 1 || h.Groups[0].Role != "lead" || h.Capabilities[0] != "client_ack" || h.SessionPubkey != "cd" {
		t.Fatalf("hello %+v", h)
	}
}

func TestHelloTimestampMustBeAFiniteInteger(t *testing.T) {
	for _, ts := range []string{`"1763900000123"`, `null`, `1e400`, `true`, `[1]`, `1.5`} {
		f, err := Decode([]byte(`{"type":"hello","sessionId":"s","timestamp":` + ts + `}`))
		if err != nil {
			t.Fatalf("timestamp %s: %v", ts, err)
		}
		if f.Body.(*Hello).HasTimestamp {
			t.Errorf("timestamp %s accepted", ts)
		}
	}
	f, _ := Decode([]byte(`{"type":"hello","timestamp":1.7639e12}`))
	if h := f.Body.(*Hello); !h.HasTimestamp || h.Timestamp != 1763900000000 {
		t.Errorf("exponent timestamp: %+v", h)
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		in   string
		want error
	}{
		{"\xff\xfe", ErrInvalidUTF8},
		{`[1,2]`, ErrNotObject},
		{`"hello"`, ErrNotObject},
		{``, ErrNotObject},
		{`{"type":`, ErrNotObject},
		{`{"kind":"send"}`, ErrNoType},
		{`{"type":7}`, ErrNotObject},
	}
	for _, c := range cases {
		if _, err := Decode([]byte(c.in)); !errors.Is(err, c.want) {
			t.Errorf("Decode(%q) = %v, want %v", c.in, err, c.want)
		}
	}
	var de *DecodeError
	if _, err := Decode([]byte(`{"type":"send","targetSpec":5}`)); !errors.As(err, &de) || de.Type != "send" {
		t.Errorf("send with numeric targetSpec: %v", err)
	}
	if _, err := Decode([]byte(`{"type":"hello","pid":"12"}`)); !errors.As(err, &de) {
		t.Errorf("hello with string pid: %v", err)
	}
}

func TestUnknownTypesDecodeWithoutBody(t *testing.T) {
	f, err := Decode([]byte(`{"type":"set_state","key":"k","value":{"a":1}}`))
	if err != nil || f.Type != "set_state" || f.Body != nil {
		t.Fatalf("unknown type: %+v %v", f, err)
	}
}

func TestReqIDEchoedOnlyWhenScalar(t *testing.T) {
	for in, want := range map[string]string{`"abc"`: `"abc"`, `42`: `42`, `{"x":1}`: ``, `[1]`: ``, `null`: ``, `true`: ``} {
		f, err := Decode([]byte(`{"type":"list_peers","_reqId":` + in + `}`))
		if err != nil {
			t.Fatal(err)
		}
		if string(f.ReqID) != want {
			t.Errorf("_reqId %s echoed as %q, want %q", in, f.ReqID, want)
		}
	}
}

func TestDecodeEveryKnownType(t *testing.T) {
	frames := map[string]string{
		"send":           `{"type":"send","targetSpec":"*","priority":"now","nonce":"n","ciphertext":"c","id":"1","clientMessageId":"x"}`,
		"client_ack":     `{"type":"client_ack","messageIds":["a","b"]}`,
		"set_status":     `{"type":"set_status","status":"working"}`,
		"set_summary":    `{"type":"set_summary","summary":"s"}`,
		"set_visible":    `{"type":"set_visible","visible":false}`,
		"set_profile":    `{"type":"set_profile","title":"t","capabilities":["x"]}`,
		"set_stats":      `{"type":"set_stats","stats":{"messagesIn":3}}`,
		"join_group":     `{"type":"join_group","name":"a/b","role":"r"}`,
		"leave_group":    `{"type":"leave_group","name":"a/b"}`,
		"list_peers":     `{"type":"list_peers"}`,
		"message_status": `{"type":"message_status","messageId":"m"}`,
		"audit_query":    `{"type":"audit_query","limit":5,"offset":0,"eventType":"peer_joined"}`,
		"audit_verify":   `{"type":"audit_verify"}`,
	}
	for typ, in := range frames {
		f, err := Decode([]byte(in))
		if err != nil || f.Type != typ || f.Body == nil {
			t.Errorf("%s: %+v %v", typ, f, err)
		}
	}
}

// TestSendFastPathMatchesGeneralPath: the one-pass decoding of send frames yields what
// decoding the envelope and the body separately yields, for valid and invalid sends.
func TestSendFastPathMatchesGeneralPath(t *testing.T) {
	for _, in := range []string{
		`{"type":"send","targetSpec":"*","priority":"now","nonce":"n","ciphertext":"Y3Q=","_reqId":"r1","clientMessageId":"c1"}`,
		`{"_reqId":7,"ciphertext":"x","type":"send","targetSpec":"@g","priority":"low","nonce":"n","id":"i"}`,
		`{"type":"send","targetSpec":"abc","priority":"now","nonce":"n","ciphertext":"x","_reqId":{"no":"echo"}}`,
		`{"type":"send","TargetSpec":"case-insensitive keys","priority":"next","nonce":"n","ciphertext":"x"}`,
		`{"type":"send","targetSpec":5,"priority":"now","nonce":"n","ciphertext":"x"}`,
		`{"type":"send","targetSpec":"a","priority":"now","nonce":"n","ciphertext":"x","unknown":[1,2]}`,
	} {
		got, gotErr := Decode([]byte(in))
		var env envelope
		if err := json.Unmarshal([]byte(in), &env); err != nil {
			t.Fatalf("%s: envelope: %v", in, err)
		}
		var body Send
		wantErr := json.Unmarshal([]byte(in), &body)
		if (gotErr != nil) != (wantErr != nil) {
			t.Errorf("%s: error %v, general path's %v", in, gotErr, wantErr)
			continue
		}
		if gotErr != nil {
			var de *DecodeError
			if !errors.As(gotErr, &de) || de.Type != "send" {
				t.Errorf("%s: error %v is not a send DecodeError", in, gotErr)
			}
			continue
		}
		if got.Type != "send" || string(got.ReqID) != string(echoable(env.ReqID)) || *got.Body.(*Send) != body {
			t.Errorf("%s: decoded %+v %+v, want reqId %s body %+v", in, got, got.Body, echoable(env.ReqID), body)
		}
	}
}
