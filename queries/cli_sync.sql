-- /cli-sync: the web app's signed list of a user's meshes becomes member rows for one key.

-- name: ConsumeSyncJti :execrows
-- 1 row: the jti is new (or its earlier record had expired) and is now used; 0 rows: a
-- replay. Deletes a few expired records on the way, which keeps the table near the set of
-- tokens still valid without a job (cli_sync_jtis_expires_idx).
WITH purged AS (
    DELETE FROM cli_sync_jtis WHERE jti IN (
        SELECT jti FROM cli_sync_jtis
        WHERE expires_at < now() AND jti <> @jti::text
        LIMIT 16 FOR UPDATE SKIP LOCKED)
)
INSERT INTO cli_sync_jtis (jti, expires_at) VALUES (@jti::text, @expires_at::timestamptz)
ON CONFLICT (jti) DO UPDATE SET used_at = now(), expires_at = excluded.expires_at
    WHERE cli_sync_jtis.expires_at < now();

-- name: SyncMeshes :many
-- The listed meshes that exist and are not archived.
SELECT id, slug FROM meshes WHERE id = ANY(@ids::text[]) AND archived_at IS NULL;

-- name: SyncMember :one
-- Adds the key as a member of the mesh, or links the live member that already has it to
-- the account (dashboard_user_id, display_name). A member that belongs to another account is
-- left alone: no row; so is one that belongs to no account unless the request proved the
-- key (@proven): a public key alone must not rename or claim someone else's member.
INSERT INTO members (id, mesh_id, user_id, peer_pubkey, display_name, role, dashboard_user_id)
VALUES (@id, @mesh_id, @user_id, @peer_pubkey, @display_name, @role, @user_id)
ON CONFLICT (mesh_id, peer_pubkey) WHERE revoked_at IS NULL DO UPDATE
    SET dashboard_user_id = excluded.dashboard_user_id, display_name = excluded.display_name
    WHERE (members.user_id = excluded.user_id OR (members.user_id IS NULL AND @proven::bool))
      AND (members.dashboard_user_id IS NULL OR members.dashboard_user_id = excluded.dashboard_user_id)
RETURNING id, role, (xmax = 0)::bool AS inserted;
