package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// A /cli-sync token is an HS256 JWT the web app signs with CLI_SYNC_SECRET. It is verified
// here by hand (crypto/hmac) rather than with a JWT library: one algorithm, a handful of
// claims, and every rejection has the original's exact reason string.

// syncMesh is one entry of the token's meshes claim.
type syncMesh struct {
	ID   string
	Slug string
	Role string // admin or member (anything else reads as member)
}

// syncClaims are the claims of a verified sync token.
type syncClaims struct {
	Sub, Email, Jti string
	Exp             time.Time // when the token stops being valid (the jti is remembered until then)
	Action          string
	Meshes          []syncMesh
	meshesIsArray   bool
}

// Bounds of the token's claims: the sub becomes a users.id, the email a users.email, and
// each listed mesh costs a statement.
const (
	maxSyncMeshes = 100
	maxJtiLen     = 200
	// maxSyncExp is 9999-12-31T23:59:59Z: a later exp is remembered until then.
	maxSyncExp = 253402300799
	// syncIatSkew is how far in the future iat may be (clocks differ).
	syncIatSkew = 30
)

// parseSyncJWT verifies a sync token's structure, signature, algorithm and times, and
// returns its claims; the reason is "" on success, else the original's rejection reason.
// The checks that need the database (jti replay) and the claims checked after it (sub,
// email, meshes: see syncClaims.validate) are left to the caller, in that order.
func parseSyncJWT(token, secret string, now time.Time) (syncClaims, string) {
	var c syncClaims
	if secret == "" {
		return c, "CLI_SYNC_SECRET not configured on broker"
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return c, "malformed JWT"
	}
	sig, err := b64url(parts[2])
	if err != nil {
		return c, "invalid signature"
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return c, "invalid signature"
	}
	var header map[string]json.RawMessage
	if !decodeSegment(parts[0], &header) {
		return c, "malformed JWT"
	}
	var alg string
	if raw, ok := header["alg"]; !ok || json.Unmarshal(raw, &alg) != nil || alg != "HS256" {
		shown := "undefined"
		if ok {
			shown = string(raw)
			if alg != "" {
				shown = alg
			}
		}
		if len(shown) > 40 {
			shown = shown[:40] + "…"
		}
		return c, "unsupported algorithm: " + shown
	}
	var claims map[string]json.RawMessage
	if !decodeSegment(parts[1], &claims) {
		return c, "malformed JWT"
	}
	for _, raw := range claims {
		// Claims become text columns, which cannot hold NUL.
		if bytes.Contains(raw, []byte(`\u0000`)) {
			return c, "malformed JWT"
		}
	}
	exp, hasExp, ok := numberClaim(claims, "exp")
	if !ok {
		return c, "malformed JWT"
	}
	iat, hasIat, ok := numberClaim(claims, "iat")
	if !ok {
		return c, "malformed JWT"
	}
	nowSec := float64(now.UnixMilli()) / 1000
	if !hasExp {
		// Without an expiry the jti would have to be remembered for ever.
		return c, "missing exp"
	}
	if exp < nowSec {
		return c, "token expired"
	}
	if hasIat && iat > nowSec+syncIatSkew {
		return c, "token issued in the future"
	}
	c.Exp = time.Unix(int64(math.Min(exp, maxSyncExp)), 0)
	c.Jti = stringClaim(claims, "jti")
	if c.Jti == "" {
		return c, "missing jti"
	}
	if len(c.Jti) > maxJtiLen {
		return c, "malformed JWT"
	}
	c.Sub, c.Email, c.Action = stringClaim(claims, "sub"), stringClaim(claims, "email"), stringClaim(claims, "action")
	var meshes []json.RawMessage
	if raw, ok := claims["meshes"]; ok && json.Unmarshal(raw, &meshes) == nil && meshes != nil {
		c.meshesIsArray = true
		seen := map[string]bool{}
		for _, m := range meshes {
			var e struct {
				ID   any `json:"id"`
				Slug any `json:"slug"`
				Role any `json:"role"`
			}
			if json.Unmarshal(m, &e) != nil {
				continue // not an object: not a valid mesh entry
			}
			id, _ := e.ID.(string)
			if id == "" || len(id) > 200 || seen[id] {
				continue
			}
			seen[id] = true
			slug, _ := e.Slug.(string)
			role, _ := e.Role.(string)
			if role != "admin" {
				role = "member"
			}
			c.Meshes = append(c.Meshes, syncMesh{ID: id, Slug: slug, Role: role})
		}
	}
	return c, ""
}

// validate checks the claims the original checked after the jti: "" when they are usable.
func (c syncClaims) validate() string {
	switch {
	case c.Sub == "" || c.Email == "":
		return "missing sub or email"
	case len(c.Sub) > maxUserIDField || len(c.Email) > maxEmailField:
		return "sub or email too long"
	case !c.meshesIsArray:
		return "missing meshes array"
	case len(c.Meshes) > maxSyncMeshes:
		return fmt.Sprintf("too many meshes (max %d)", maxSyncMeshes)
	}
	return ""
}

// b64url decodes base64url with or without padding.
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// decodeSegment decodes a base64url JSON object into v.
func decodeSegment(seg string, v *map[string]json.RawMessage) bool {
	raw, err := b64url(seg)
	if err != nil {
		return false
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// numberClaim reads a numeric claim: ok is false when it is present but not a number
// (null counts as absent).
func numberClaim(claims map[string]json.RawMessage, name string) (v float64, present, ok bool) {
	raw, found := claims[name]
	if !found || string(raw) == "null" {
		return 0, false, true
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, false, false
	}
	return v, true, true
}

// stringClaim reads a string claim; absent or not a string reads as "".
func stringClaim(claims map[string]json.RawMessage, name string) string {
	var s string
	if raw, ok := claims[name]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}
