package invite

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"
)

func testPayload(t *testing.T) (Payload, ed25519.PrivateKey) {
	t.Helper()
	_, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := Payload{V: 1, MeshID: "mesh1", MeshSlug: "team", BrokerURL: "wss://b.example/ws",
		ExpiresAt: 1_900_000_000, MeshRootKey: NewRootKey(), Role: "member", Nonce: NewNonce()}
	p.Sign(sec)
	return p, sec
}

func TestCanonicalV1(t *testing.T) {
	p := Payload{V: 1, MeshID: "m", MeshSlug: "s", BrokerURL: "wss://x/ws", ExpiresAt: 42,
		MeshRootKey: "rk", Role: "admin", OwnerPubkey: "pk", Nonce: "not signed"}
	if got, want := p.Canonical(), "1|m|s|wss://x/ws|42|rk|admin|pk"; got != want {
		t.Fatalf("canonical %q, want %q", got, want)
	}
}

func TestSignEncodeDecodeVerify(t *testing.T) {
	p, _ := testPayload(t)
	if len(p.Signature) != 128 || len(p.OwnerPubkey) != 64 {
		t.Fatalf("signature %d chars, owner key %d", len(p.Signature), len(p.OwnerPubkey))
	}
	tok := p.Token()
	if strings.ContainsAny(tok, "=+/") {
		t.Fatalf("token is not unpadded base64url: %s", tok)
	}
	padded := tok + strings.Repeat("=", (4-len(tok)%4)%4)
	for _, in := range []string{tok, padded, Link(tok), " " + Link(tok) + "\n", "https://claudemesh.com/join/" + tok,
		"https://claudemesh.com/x/join/" + tok + "/"} {
		got, err := DecodeToken(in)
		if err != nil {
			t.Fatalf("decode %q: %v", in, err)
		}
		if got != p {
			t.Fatalf("decoded %+v, want %+v", got, p)
		}
		if err := got.Verify(); err != nil {
			t.Fatalf("verify: %v", err)
		}
	}
	// The JSON carries the original's field names, and the signature.
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"v", "mesh_id", "mesh_slug", "broker_url", "expires_at", "mesh_root_key", "role", "owner_pubkey", "signature", "nonce"} {
		if _, ok := m[k]; !ok {
			t.Errorf("token JSON lacks %q: %s", k, raw)
		}
	}
}

func TestTamperDetected(t *testing.T) {
	p, _ := testPayload(t)
	tamper := map[string]func(*Payload){
		"role":        func(p *Payload) { p.Role = "admin" },
		"mesh":        func(p *Payload) { p.MeshID = "other" },
		"expiry":      func(p *Payload) { p.ExpiresAt++ },
		"root key":    func(p *Payload) { p.MeshRootKey = NewRootKey() },
		"broker":      func(p *Payload) { p.BrokerURL = "wss://evil/ws" },
		"slug":        func(p *Payload) { p.MeshSlug = "x" },
		"version":     func(p *Payload) { p.V = 2 },
		"signature":   func(p *Payload) { p.Signature = strings.Repeat("0", 128) },
		"short sig":   func(p *Payload) { p.Signature = p.Signature[:126] },
		"non-hex sig": func(p *Payload) { p.Signature = "zz" + p.Signature[2:] },
		"owner key":   func(p *Payload) { k, _, _ := ed25519.GenerateKey(rand.Reader); p.OwnerPubkey = string(hexOf(k)) },
		"bad key":     func(p *Payload) { p.OwnerPubkey = "abc" },
	}
	for name, f := range tamper {
		q := p
		f(&q)
		if err := q.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", name, err)
		}
	}
	// The nonce is not signed: changing it keeps the signature valid (clients that predate
	// it verify the canonical string only).
	q := p
	q.Nonce = "other"
	if err := q.Verify(); err != nil {
		t.Fatalf("nonce change: %v", err)
	}
}

func hexOf(k ed25519.PublicKey) []byte {
	const h = "0123456789abcdef"
	out := make([]byte, 0, 64)
	for _, b := range k {
		out = append(out, h[b>>4], h[b&15])
	}
	return out
}

func TestSameSecondInvitesDiffer(t *testing.T) {
	_, sec, _ := ed25519.GenerateKey(rand.Reader)
	mk := func() string {
		p := Payload{V: 1, MeshID: "m", MeshSlug: "s", BrokerURL: "wss://x/ws", ExpiresAt: 1_900_000_000,
			MeshRootKey: "rk", Role: "member", Nonce: NewNonce()}
		p.Sign(sec)
		return p.Token()
	}
	if a, b := mk(), mk(); a == b {
		t.Fatal("two invites with the same fields have the same token")
	}
}

func TestDecodeErrors(t *testing.T) {
	p, _ := testPayload(t)
	enc := func(v any) string {
		raw, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	noSig := p
	noSig.Signature = ""
	v2 := p
	v2.V = 2
	cases := map[string]struct {
		in   string
		want error
		msg  string
	}{
		"empty":        {"", ErrMalformed, "empty"},
		"link only":    {"ic://join/", ErrMalformed, "empty"},
		"not base64":   {"!!!", ErrMalformed, "not base64url"},
		"std base64":   {base64.StdEncoding.EncodeToString([]byte(`{"v":1}`)) + "+/", ErrMalformed, "not base64url"},
		"not json":     {base64.RawURLEncoding.EncodeToString([]byte("hello")), ErrMalformed, "not a JSON payload"},
		"json array":   {enc([]int{1}), ErrMalformed, "not a JSON payload"},
		"wrong type":   {enc(map[string]any{"v": "1"}), ErrMalformed, "not a JSON payload"},
		"version":      {enc(v2), ErrMalformed, "version 2"},
		"no signature": {enc(noSig), ErrMalformed, "signature missing"},
		"too large":    {strings.Repeat("A", MaxTokenChars+1), ErrTooLarge, "over 4096"},
		"long field":   {enc(map[string]any{"v": 1, "mesh_id": strings.Repeat("m", 2000)}), ErrMalformed, "mesh_id over"},
	}
	for name, c := range cases {
		_, err := DecodeToken(c.in)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v containing %q", name, err, c.want, c.msg)
		}
	}
}

func TestCapabilityV2(t *testing.T) {
	pub, sec, _ := ed25519.GenerateKey(rand.Reader)
	owner := string(hexOf(pub))
	exp := time.Unix(1_900_000_000, 999_000_000)
	canon := CanonicalV2("mesh1", "inv1", exp, "member", owner)
	if want := "v=2|mesh1|inv1|1900000000|member|" + owner; canon != want {
		t.Fatalf("canonical %q, want %q", canon, want)
	}
	c, err := ParseCapability(SignCapability(canon, sec))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(canon, owner); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := c.Verify(CanonicalV2("mesh1", "inv1", exp, "admin", owner), owner); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other canonical: %v", err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if err := c.Verify(canon, string(hexOf(other))); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	for _, bad := range []string{"", "{}", `{"canonical":"x"}`, "[1]"} {
		if _, err := ParseCapability(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseCapability(%q) = %v", bad, err)
		}
	}
}

func TestCodes(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		c := NewCode()
		if len(c) != CodeLength {
			t.Fatalf("code %q", c)
		}
		for _, r := range c {
			if !strings.ContainsRune(CodeAlphabet, r) {
				t.Fatalf("code %q has %q", c, r)
			}
		}
		if seen[c] {
			t.Fatalf("code %q twice in 1000", c)
		}
		seen[c] = true
	}
}

func TestSealRootKeyOpens(t *testing.T) {
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root := NewRootKey()
	sealed, err := SealRootKey(root, *pub)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(sealed, "=+/") {
		t.Fatalf("sealed key is not unpadded base64url: %s", sealed)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil {
		t.Fatal(err)
	}
	opened, ok := box.OpenAnonymous(nil, raw, pub, priv)
	if !ok || base64.RawURLEncoding.EncodeToString(opened) != root {
		t.Fatalf("opened %v %x, want root key %s", ok, opened, root)
	}
	if _, err := SealRootKey("short", *pub); err == nil {
		t.Fatal("sealed a root key that is not 32 bytes")
	}
	// Padded keys decode too; other lengths do not.
	k, err := DecodeKey32(base64.URLEncoding.EncodeToString(pub[:]))
	if err != nil || k != *pub {
		t.Fatalf("padded key: %v", err)
	}
	for _, bad := range []string{"", "AAAA", strings.Repeat("A", 65), base64.RawURLEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := DecodeKey32(bad); err == nil {
			t.Errorf("DecodeKey32(%q) accepted", bad)
		}
	}
}
