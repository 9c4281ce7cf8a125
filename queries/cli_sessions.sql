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

-- name: InsertCliSession :one
-- Mints a bearer: the token itself is never stored, only @token_hash (its SHA-256).
INSERT INTO cli_sessions (id, user_id, device_code_id, hostname, platform, arch, label, token_hash)
VALUES (@id, @user_id, sqlc.narg(device_code_id), sqlc.narg(hostname), sqlc.narg(platform),
        sqlc.narg(arch), sqlc.narg(label), @token_hash)
RETURNING id, created_at;

-- name: ListLiveCliSessions :many
-- A user's unrevoked tokens, oldest first (GET /cli/sessions; served by cli_sessions_user_idx).
SELECT id, hostname, platform, arch, label, last_seen_at, created_at FROM cli_sessions
WHERE user_id = @user_id AND revoked_at IS NULL
ORDER BY created_at, id;

-- name: ListUserCliSessions :many
-- Every token of a user, revoked ones too (broker admin token list).
SELECT id, label, hostname, created_at, last_seen_at, revoked_at FROM cli_sessions
WHERE user_id = @user_id
ORDER BY created_at, id;

-- name: RevokeCliSessionByHash :one
-- Revokes the unrevoked token with this hash (the bearer itself proves the right to).
UPDATE cli_sessions SET revoked_at = now()
WHERE token_hash = @token_hash AND revoked_at IS NULL
RETURNING id;

-- name: RevokeUserCliSession :one
-- Revokes one unrevoked token by id, only if it belongs to @user_id.
UPDATE cli_sessions SET revoked_at = now()
WHERE id = @id AND user_id = @user_id AND revoked_at IS NULL
RETURNING id;

-- name: RevokeCliSession :one
-- Revokes one unrevoked token by id (broker admin token revoke).
UPDATE cli_sessions SET revoked_at = now()
WHERE id = @id AND revoked_at IS NULL
RETURNING id;

-- name: CountLiveCliSessions :one
-- A user's unrevoked tokens (bounded per user; cli_sessions_user_idx).
SELECT count(*)::int FROM cli_sessions WHERE user_id = @user_id AND revoked_at IS NULL;
