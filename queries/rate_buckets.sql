-- Token buckets shared by all instances.

-- name: TakeToken :one
-- Takes one token from bucket @key (capacity @capacity, refilled @refill_per_second), creating
-- it full. No row: the bucket is empty (nothing changes, so refill keeps accruing).
INSERT INTO rate_buckets AS b (key, tokens, updated_at)
VALUES (@key, sqlc.arg(capacity)::float8 - 1, now())
ON CONFLICT (key) DO UPDATE SET
    tokens = least(sqlc.arg(capacity)::float8, b.tokens + extract(epoch FROM now() - b.updated_at)::float8 * sqlc.arg(refill_per_second)::float8) - 1,
    updated_at = now()
WHERE least(sqlc.arg(capacity)::float8, b.tokens + extract(epoch FROM now() - b.updated_at)::float8 * sqlc.arg(refill_per_second)::float8) >= 1
RETURNING tokens;

-- name: PurgeRateBuckets :execrows
-- Buckets idle long enough to be full again carry no state.
DELETE FROM rate_buckets WHERE updated_at < now() - interval '10 minutes';
