package auth

import (
	"context"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/protocol"
)

// nothingStore answers as an empty database would; the fuzzer exercises the pure checks.
type nothingStore struct{}

func (nothingStore) Lookup(context.Context, *protocol.Hello, bool) (Facts, error) {
	return Facts{}, nil
}
func (nothingStore) RememberSignature(context.Context, string, string, time.Time) (bool, error) {
	return true, nil
}

// FuzzVerifyHello: any decoded hello yields a member or a rejection with a known code, never
// a panic; without a member in the store nothing is ever accepted.
func FuzzVerifyHello(f *testing.F) {
	f.Add([]byte(`{"type":"hello","meshId":"m","memberId":"u","pubkey":"` + "aa" + `","sessionId":"s","timestamp":1,"signature":"ff"}`))
	f.Add([]byte(`{"type":"hello","sessionPubkey":"ABC","timestamp":"x"}`))
	f.Add([]byte(`{"type":"hello","meshId":"m","pubkey":"0000000000000000000000000000000000000000000000000000000000000000","signature":"` +
		"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" + `","sessionId":"s","timestamp":1700000000000}`))
	known := map[string]bool{
		protocol.CodeBadSessionPubkey: true, protocol.CodeCapacity: true, protocol.CodeTimestampSkew: true,
		protocol.CodeMalformed: true, protocol.CodeBadSignature: true, protocol.CodeUnauthorized: true,
		protocol.CodeBadSessionProof: true, protocol.CodeReplayed: true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := protocol.Decode(data)
		if err != nil {
			return
		}
		h, ok := fr.Body.(*protocol.Hello)
		if !ok {
			return
		}
		now := time.UnixMilli(h.Timestamp) // so the skew check passes and later checks run
		_, err = VerifyHello(context.Background(), nothingStore{}, h, now, Options{MaxPresencesPerMesh: 10})
		r, ok := err.(*Rejection)
		if !ok || !known[r.Code] {
			t.Fatalf("want a known rejection, got %v", err)
		}
	})
}
