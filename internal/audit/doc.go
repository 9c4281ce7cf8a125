// Package audit keeps each mesh's hash chain of metadata events (PROTOCOL.md §7), byte-for-
// byte compatible with the original TypeScript broker, so a chain written by either one
// verifies in the other.
//
//	hash = hex(sha256(prev | meshId | event | actor | canonicalJSON(payload) | createdAt))
//
// The first row of a mesh has prev = "genesis"; actor is the member id or the word null;
// createdAt is rendered as JavaScript's Date.prototype.toISOString (UTC, milliseconds, Z);
// canonical JSON sorts object keys by UTF-16 code units and renders strings and numbers as
// JavaScript's JSON.stringify does (no HTML escaping, U+2028/U+2029 raw, shortest round-trip
// numbers). Payloads hold metadata only, never nonce, ciphertext or plaintext.
//
// The functions here are pure and safe for concurrent use.
package audit
