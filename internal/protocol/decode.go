package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Frame is one decoded client frame: its type, the _reqId to echo (raw JSON, nil when
// absent), and the typed body (a *Hello, *Send, … or nil for a type the broker ignores).
type Frame struct {
	Type  string
	ReqID json.RawMessage
	Body  any
}

// ErrNotObject, ErrNoType and ErrInvalidUTF8 are the decode failures a session reports.
var (
	ErrInvalidUTF8 = errors.New("frame is not valid UTF-8")
	ErrNotObject   = errors.New("frame is not a JSON object")
	ErrNoType      = errors.New(`frame has no string "type"`)
)

// DecodeError wraps a failure to decode a known frame type's body.
type DecodeError struct {
	Type string
	Err  error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("decode %s: %v", e.Type, e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }

type envelope struct {
	Type  *string         `json:"type"`
	ReqID json.RawMessage `json:"_reqId"`
}

// sendFrame is a send frame decoded in one pass.
type sendFrame struct {
	envelope
	Send
}

// newBody returns a pointer to the body type for a frame type, or nil if the broker does
// not handle that type (unknown types are ignored, as clients of several brokers expect).
func newBody(t string) any {
	switch t {
	case "hello":
		return &helloWire{}
	case "send":
		return &Send{}
	case "client_ack":
		return &ClientAck{}
	case "set_status":
		return &SetStatus{}
	case "set_summary":
		return &SetSummary{}
	case "set_visible":
		return &SetVisible{}
	case "set_profile":
		return &SetProfile{}
	case "set_stats":
		return &SetStats{}
	case "join_group":
		return &JoinGroup{}
	case "leave_group":
		return &LeaveGroup{}
	case "list_peers":
		return &ListPeers{}
	case "message_status":
		return &MessageStatus{}
	case "audit_query":
		return &AuditQuery{}
	case "audit_verify":
		return &AuditVerify{}
	case "hook_token":
		return &HookToken{}
	}
	return nil
}

// Decode parses one text frame. Invalid UTF-8 is ErrInvalidUTF8 (the session closes with
// 1007 before any JSON decoding); otherwise the frame must be a JSON object with a string
// "type". A known type's body that does not fit its schema is a *DecodeError.
func Decode(data []byte) (Frame, error) {
	if !utf8.Valid(data) {
		return Frame{}, ErrInvalidUTF8
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Frame{}, ErrNotObject
	}
	// The hot frame, send, in one JSON pass: envelope and body together. Anything else (or
	// a send this does not decode) takes the general path, which reports errors per type.
	var sf sendFrame
	if err := json.Unmarshal(data, &sf); err == nil && sf.Type != nil && *sf.Type == "send" {
		return Frame{Type: "send", ReqID: echoable(sf.ReqID), Body: &sf.Send}, nil
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrNotObject, err)
	}
	if env.Type == nil {
		return Frame{}, ErrNoType
	}
	f := Frame{Type: *env.Type, ReqID: echoable(env.ReqID)}
	body := newBody(f.Type)
	if body == nil {
		return f, nil
	}
	if err := json.Unmarshal(data, body); err != nil {
		return f, &DecodeError{Type: f.Type, Err: err}
	}
	if hw, ok := body.(*helloWire); ok {
		h, err := hw.hello()
		if err != nil {
			return f, &DecodeError{Type: f.Type, Err: err}
		}
		f.Body = h
		return f, nil
	}
	if ht, ok := body.(*HookToken); ok {
		ht.ReqID = echoable(ht.ReqID)
	}
	f.Body = body
	return f, nil
}

// echoable keeps a _reqId only when it is a JSON string or number: that is what clients
// send, and echoing arbitrary JSON back would let a client make the broker write anything.
func echoable(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || len(raw) > 256 {
		return nil
	}
	switch c := raw[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return append(json.RawMessage(nil), raw...)
	}
	return nil
}

// helloWire is Hello as it arrives: loosely typed where the original accepted anything.
type helloWire struct {
	Hello
	Pid       json.RawMessage `json:"pid"`
	Timestamp json.RawMessage `json:"timestamp"`
}

func (w *helloWire) hello() (*Hello, error) {
	h := w.Hello
	if ts, ok := finiteNumber(w.Timestamp); ok {
		// JavaScript compares the number as is; a fractional ms timestamp is legal there.
		// The signed canonical string renders it as a decimal integer, so keep the integer.
		if ts >= -(1<<53) && ts <= 1<<53 && ts == math.Trunc(ts) {
			h.Timestamp, h.HasTimestamp = int64(ts), true
		}
	}
	if len(w.Pid) > 0 && string(w.Pid) != "null" {
		p, ok := finiteNumber(w.Pid)
		if !ok || p != math.Trunc(p) || p < math.MinInt32 || p > math.MaxInt32 {
			return nil, errors.New("pid must be an integer")
		}
		h.Pid = int64(p)
	}
	h.CutInformational()
	return &h, nil
}

func finiteNumber(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' || raw[0] == 'n' || raw[0] == 't' || raw[0] == 'f' || raw[0] == '[' || raw[0] == '{' {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}
