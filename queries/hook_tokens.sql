-- Hook tokens (migration 10): a member-scoped Bearer credential for POST /hook/set-status.

-- name: EnsureBrokerSecret :many
-- The deployment's secret @name, created from @candidate by whichever instance asks first.
-- Empty only when a concurrent first insert committed after this statement's snapshot: ask
-- again.
WITH ins AS (
    INSERT INTO broker_secrets (name, secret) VALUES (@name, @candidate)
    ON CONFLICT (name) DO NOTHING
    RETURNING secret
)
SELECT secret FROM ins
UNION ALL
SELECT s.secret FROM broker_secrets s WHERE s.name = @name;

-- name: LockHookToken :one
-- The member's token generation, locked for the rest of the transaction; no row when the
-- member has none yet.
SELECT generation FROM hook_tokens WHERE member_id = @member_id FOR UPDATE;

-- name: InsertHookToken :execrows
-- The member's first token; 0 rows when a concurrent request created it first.
INSERT INTO hook_tokens (member_id, token_hash) VALUES (@member_id, @token_hash)
ON CONFLICT (member_id) DO NOTHING;

-- name: RotateHookToken :exec
UPDATE hook_tokens SET token_hash = @token_hash, generation = @generation, rotated_at = now()
WHERE member_id = @member_id;

-- name: HookTokenMember :one
-- The member a hook token belongs to: only a member that is not revoked, of a mesh that is
-- not archived.
SELECT m.id, m.mesh_id FROM hook_tokens t
JOIN members m ON m.id = t.member_id AND m.revoked_at IS NULL
JOIN meshes s ON s.id = m.mesh_id AND s.archived_at IS NULL
WHERE t.token_hash = @token_hash;
