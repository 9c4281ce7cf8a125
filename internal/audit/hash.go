package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Genesis is the prev_hash of a mesh's first row.
const Genesis = "genesis"

// FormatTime renders t as JavaScript's toISOString: UTC, millisecond precision, "Z".
func FormatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// TruncateToMillis drops sub-millisecond precision, so a timestamp stored in Postgres
// (microseconds) renders identically before and after the round trip.
func TruncateToMillis(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// Hash computes a row's hash from its fields. actor nil renders as the word null;
// canonicalPayload is CanonicalJSON of the payload.
func Hash(prev, meshID, eventType string, actor *string, canonicalPayload string, createdAt time.Time) string {
	a := "null"
	if actor != nil {
		a = *actor
	}
	var b strings.Builder
	for i, part := range []string{prev, meshID, eventType, a, canonicalPayload, FormatTime(createdAt)} {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(part)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// Row is one audit_log row as stored.
type Row struct {
	ID        int64
	MeshID    string
	EventType string
	Actor     *string
	Payload   []byte // JSON
	PrevHash  string
	Hash      string
	CreatedAt time.Time
}

// Verification is the outcome of checking a chain.
type Verification struct {
	Valid    bool
	Entries  int
	BrokenAt int64 // id of the first bad row when !Valid
	Reason   string
}

// Verify checks rows, which must be one mesh's whole chain in id order: each prev_hash links
// to the previous row's hash (genesis first) and each hash matches its recomputation.
func Verify(rows []Row) Verification {
	v := NewVerifier()
	for _, r := range rows {
		v.Add(r)
	}
	return v.Result()
}

// Verifier checks a chain fed to it row by row in id order, so a chain of any length is
// verified in constant memory. After the first bad row it only counts.
type Verifier struct {
	prev   string
	n      int
	broken *Verification
}

// NewVerifier starts at genesis.
func NewVerifier() *Verifier { return &Verifier{prev: Genesis} }

// Add checks the next row.
func (v *Verifier) Add(r Row) {
	v.n++
	if v.broken != nil {
		return
	}
	if r.PrevHash != v.prev {
		v.broken = &Verification{BrokenAt: r.ID, Reason: "prev_hash does not link to the previous row"}
		return
	}
	canon, err := CanonicalJSON(r.Payload)
	if err != nil {
		v.broken = &Verification{BrokenAt: r.ID, Reason: err.Error()}
		return
	}
	if Hash(r.PrevHash, r.MeshID, r.EventType, r.Actor, canon, r.CreatedAt) != r.Hash {
		v.broken = &Verification{BrokenAt: r.ID, Reason: "hash does not match the row's contents"}
		return
	}
	v.prev = r.Hash
}

// Result is the verification of the rows added so far; Entries counts all of them.
func (v *Verifier) Result() Verification {
	if v.broken != nil {
		res := *v.broken
		res.Entries = v.n
		return res
	}
	return Verification{Valid: true, Entries: v.n}
}
