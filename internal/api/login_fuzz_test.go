package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const fuzzSecret = "fuzz-secret"

func fuzzSign(header, claims string) string {
	s := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, []byte(fuzzSecret))
	mac.Write([]byte(s))
	return s + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// FuzzParseJWT: any token gives claims or one of the documented reasons — never a panic,
// never accepted claims without a jti or with an exp in the past. The corpus holds signed
// tokens, so mutations of the claims past the signature check are reached through the
// (header, claims) pair that is signed inside the target.
func FuzzParseJWT(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	for _, s := range [][3]string{
		{`{"alg":"HS256","typ":"JWT"}`, `{"sub":"u","email":"e","jti":"j","iat":1800000000,"exp":1800000300,"meshes":[{"id":"m","role":"admin"}]}`, ""},
		{`{"alg":"none"}`, `{}`, ""},
		{`{"alg":5}`, `{"exp":"x"}`, ""},
		{`{"alg":"HS256"}`, `{"exp":1e400,"jti":"j"}`, ""},
		{`{"alg":"HS256"}`, `{"exp":1800000300,"iat":1900000000,"jti":"j"}`, ""},
		{`{"alg":"HS256"}`, `{"exp":1800000300,"jti":"j","meshes":[1,"x",null,{"id":7}]}`, ""},
		{`[]`, `[]`, "a.b"},
		{``, ``, "..."},
		{``, ``, "a.b.c=="},
	} {
		f.Add(s[0], s[1], s[2])
	}
	reasons := map[string]bool{"malformed JWT": true, "invalid signature": true, "missing exp": true, "token expired": true,
		"token issued in the future": true, "missing jti": true}
	f.Fuzz(func(t *testing.T, header, claims, raw string) {
		for _, tok := range []string{raw, fuzzSign(header, claims)} {
			c, reason := parseSyncJWT(tok, fuzzSecret, now)
			switch {
			case reason == "":
				if c.Jti == "" || len(c.Jti) > maxJtiLen || strings.ContainsRune(c.Jti+c.Sub+c.Email, 0) || c.Exp.Before(now.Add(-time.Second)) || c.Exp.Unix() > maxSyncExp {
					t.Fatalf("accepted %q with claims %+v", tok, c)
				}
				for _, m := range c.Meshes {
					if m.ID == "" || (m.Role != "admin" && m.Role != "member") {
						t.Fatalf("accepted mesh %+v", m)
					}
				}
				if v := c.validate(); v != "" && !strings.HasPrefix(v, "missing") && v != "sub or email too long" && !strings.HasPrefix(v, "too many meshes") {
					t.Fatalf("validate reason %q", v)
				}
			case strings.HasPrefix(reason, "unsupported algorithm: "):
				if utf8.RuneCountInString(reason) > len("unsupported algorithm: ")+41 {
					t.Fatalf("unbounded reason %q", reason)
				}
			case !reasons[reason]:
				t.Fatalf("reason %q is not a documented one", reason)
			}
		}
	})
}

// FuzzDeviceCodeBody: any body starts a login with bounded fields or is refused with a
// documented 400.
func FuzzDeviceCodeBody(f *testing.F) {
	for _, s := range []string{`{"hostname":"h","platform":"linux","arch":"amd64"}`, `{"hostname":5}`, `null`, `[]`, ``, `{`,
		`{"arch":"` + strings.Repeat("x", 201) + `"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := parseDeviceInfo(raw)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != 400 || !strings.HasSuffix(e.Msg, " longer than 200 characters") {
				t.Fatalf("refusal %v", err)
			}
			return
		}
		for _, v := range []string{d.Hostname, d.Platform, d.Arch} {
			if utf8.RuneCountInString(v) > maxDeviceField || strings.ContainsRune(v, 0) {
				t.Fatalf("accepted %+v", d)
			}
		}
	})
}
