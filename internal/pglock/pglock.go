// Package pglock names Postgres advisory locks. A lock is named by a string (its scope and
// the id it guards, e.g. "audit:<mesh>"); its key is the first 8 bytes of the name's SHA-256
// as a positive int64, so every instance, of any version, derives the same key.
package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/meshbroker/meshbroker/db"
)

// Key is the advisory lock key of name.
func Key(name string) int64 {
	sum := sha256.Sum256([]byte(name))
	return int64(binary.BigEndian.Uint64(sum[:8]) & 0x7fffffffffffffff)
}

// Xact takes the transaction-scoped advisory lock named name on q's transaction (held until
// it ends): what serialises a check-then-insert across every instance.
func Xact(ctx context.Context, q *db.Queries, name string) error {
	if err := q.XactLock(ctx, Key(name)); err != nil {
		return fmt.Errorf("advisory lock %s: %w", name, err)
	}
	return nil
}
