package envelope

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

func TestSealOpenRoundTrip(t *testing.T) {
	apub, asec, _ := ed25519.GenerateKey(rand.Reader)
	bpub, bsec, _ := ed25519.GenerateKey(rand.Reader)
	n, ct, err := Seal([]byte("hello bob"), hex.EncodeToString(bpub), asec)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := Open(n, ct, hex.EncodeToString(apub), bsec)
	if err != nil || string(pt) != "hello bob" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// A third party cannot open it; a flipped byte does not open.
	_, csec, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := Open(n, ct, hex.EncodeToString(apub), csec); err == nil {
		t.Fatal("opened with the wrong key")
	}
	if _, err := Open(n, ct[:len(ct)-4]+"AAA=", hex.EncodeToString(apub), bsec); err == nil {
		t.Fatal("opened a tampered ciphertext")
	}
	if _, err := CurvePublic("zz"); err == nil {
		t.Fatal("accepted a non-key")
	}
}
