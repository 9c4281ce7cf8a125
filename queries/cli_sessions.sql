-- CLI bearer tokens (cli_sessions): opaque random strings, only their SHA-256 is stored.

-- name: AuthenticateBearer :one
-- The unrevoked token with this hash, and its user.
SELECT c.id, c.user_id FROM cli_sessions c
WHERE c.token_hash = @token_hash AND c.revoked_at IS NULL;

-- name: TouchCliSessions :exec
-- Bumps last_seen_at of tokens used since the last batch (written off the request path).
UPDATE cli_sessions SET last_seen_at = now() WHERE id = ANY(@ids::text[]) AND revoked_at IS NULL;

-- name: UserExists :one
SELECT EXISTS (SELECT 1 FROM users WHERE id = @id)::bool;
