// Package invite holds the invite formats of the original broker, without any database:
// the signed v1 payload and its token (base64url JSON, what `/join` checks), the v2
// canonical string and capability (what `/invites/:code/claim` checks), short codes, and the
// sealing of a mesh root key to a claimant's x25519 key.
//
// Everything here is a pure function of its arguments (plus crypto/rand where a fresh value
// is made) and safe for concurrent use. Decoding functions take untrusted input: they bound
// sizes, never panic, and return errors that say what was wrong.
package invite
