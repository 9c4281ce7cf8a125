-- Meshes.

-- name: GetMesh :one
SELECT * FROM meshes WHERE id = @id;

-- name: InsertMeshIfSlugFree :one
-- A new mesh, unless a live mesh already has the slug (no row then: try the next suffix).
INSERT INTO meshes (id, name, slug, owner_user_id, owner_pubkey, owner_secret_key, root_key)
VALUES (@id, @name, @slug, sqlc.narg(owner_user_id), @owner_pubkey, @owner_secret_key, @root_key)
ON CONFLICT (slug) WHERE archived_at IS NULL DO NOTHING
RETURNING *;

-- name: LiveMeshBySlug :one
-- A non-archived mesh by slug (archived meshes are invisible to the API, joins and claims).
SELECT * FROM meshes WHERE slug = @slug AND archived_at IS NULL;

-- name: LiveMesh :one
-- A non-archived mesh by id.
SELECT * FROM meshes WHERE id = @id AND archived_at IS NULL;

-- name: ArchiveMesh :one
-- Archives a live mesh and, when that commits, tells every instance to close its sockets.
WITH a AS (
    UPDATE meshes SET archived_at = now() WHERE id = @id AND archived_at IS NULL RETURNING id, slug
)
SELECT a.id, a.slug, pg_notify(@channel::text, @payload::text)::text AS notified FROM a;

-- name: ListMeshes :many
-- Every mesh, newest first, with its member and live-session counts (operator listing).
SELECT s.id, s.name, s.slug, s.owner_user_id, s.created_at, s.archived_at,
       (SELECT count(*) FROM members m WHERE m.mesh_id = s.id AND m.revoked_at IS NULL)::bigint AS member_count,
       (SELECT count(*) FROM presences p WHERE p.mesh_id = s.id AND p.ended_at IS NULL AND p.disconnected_at IS NULL)::bigint AS active_peers
FROM meshes s
WHERE (@include_archived::bool OR s.archived_at IS NULL)
ORDER BY s.created_at DESC, s.id
LIMIT @lim;

-- name: UserMeshes :many
-- The live meshes a user belongs to (an unrevoked member) or owns, with the user's role
-- (admin if owner or any of its members is), member and live-session counts. Found through
-- the user indexes on members and meshes.
SELECT s.id, s.slug, s.name,
       CASE WHEN s.owner_user_id = @user_id::text OR bool_or(m.role = 'admin') THEN 'admin' ELSE 'member' END::text AS role,
       (s.owner_user_id IS NOT DISTINCT FROM @user_id::text)::bool AS is_owner,
       coalesce(min(m.joined_at), s.created_at)::timestamptz AS joined_at,
       (SELECT count(*) FROM members c WHERE c.mesh_id = s.id AND c.revoked_at IS NULL)::bigint AS member_count,
       (SELECT count(*) FROM presences p WHERE p.mesh_id = s.id AND p.ended_at IS NULL AND p.disconnected_at IS NULL)::bigint AS active_peers
FROM meshes s
LEFT JOIN members m ON m.mesh_id = s.id AND m.user_id = @user_id::text AND m.revoked_at IS NULL
WHERE s.archived_at IS NULL
  AND s.id IN (SELECT mesh_id FROM members WHERE user_id = @user_id::text AND revoked_at IS NULL
               UNION ALL SELECT id FROM meshes WHERE owner_user_id = @user_id::text)
GROUP BY s.id
ORDER BY joined_at, s.id;

-- name: UpdateSelfEditable :one
-- Merges @patch into a live mesh's selfEditable policy in one statement (two admins
-- changing different fields at once both win) and returns the policy as it now is.
UPDATE meshes SET self_editable = self_editable || @patch::jsonb
WHERE id = @id AND archived_at IS NULL
RETURNING self_editable;

-- name: CountOwnedMeshes :one
-- Meshes a user owns that count against its cap: live ones, and ones archived in the last
-- day (each keeps its rows and audit chain, so a create-and-delete loop must not be free).
SELECT count(*) FROM meshes WHERE owner_user_id = @user_id::text
    AND (archived_at IS NULL OR archived_at > now() - interval '1 day');

-- name: XactLock :exec
-- A transaction-scoped advisory lock (internal/pglock names them): serialises a mesh's audit
-- chain appends, or a check-then-insert such as a user's mesh count, across every instance
-- until the transaction ends.
SELECT pg_advisory_xact_lock(@lock_key::bigint);
