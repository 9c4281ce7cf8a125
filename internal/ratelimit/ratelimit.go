// Package ratelimit holds token buckets of two kinds. A Limiter's buckets are shared by
// every broker instance: rows in Postgres (rate_buckets), taken from with one atomic upsert,
// so a member connected to several instances gets its limit once, not once per instance.
// A Bucket lives in this process's memory (a session's budget, or per key through Buckets),
// and may stand in front of a shared one (AllowBehind) so that refused requests cost no
// query.
//
// Limiter, Bucket and Buckets are safe for concurrent use.
package ratelimit

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
)

// Limiter takes tokens from database-backed buckets.
type Limiter struct{ Q *db.Queries }

// Allow takes one token from bucket key, which holds at most burst tokens and refills
// perMinute tokens a minute. It reports false when the bucket is empty.
func (l Limiter) Allow(ctx context.Context, key string, burst, perMinute float64) (bool, error) {
	_, err := l.Q.TakeToken(ctx, db.TakeTokenParams{Key: key, Capacity: burst, RefillPerSecond: perMinute / 60})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rate limit %s: %w", key, err)
	}
	return true, nil
}
