package clitoken

import (
	"regexp"
	"testing"
)

// A bearer is cm_ and 43 base64url characters (32 random bytes); its stored form is the
// SHA-256 in lowercase hex.
func TestTokenShapeAndHash(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := New()
		if !regexp.MustCompile(`^cm_[A-Za-z0-9_-]{43}$`).MatchString(tok) || seen[tok] {
			t.Fatalf("token %q (repeated: %v)", tok, seen[tok])
		}
		seen[tok] = true
	}
	if got := Hash("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("Hash(abc) = %s", got)
	}
}
