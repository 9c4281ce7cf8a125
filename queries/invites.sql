-- Invites: creation, the /join and /invites/:code/claim lookups, and the single-use CAS.
-- Query names start with Invite so they never collide with other files' mesh or member
-- queries.

-- name: InviteHealMeshKeys :one
-- Fills a mesh's missing invite-signing keypair (both halves, or neither) and root key with
-- the given fresh ones and returns the mesh as it now is. Concurrent callers serialise on the
-- row: the second sees the first's keys and keeps them, so every invite of a mesh is signed
-- by the key the mesh ends up with.
UPDATE meshes SET
    owner_pubkey = CASE WHEN owner_pubkey IS NULL OR owner_secret_key IS NULL THEN @owner_pubkey::text ELSE owner_pubkey END,
    owner_secret_key = CASE WHEN owner_pubkey IS NULL OR owner_secret_key IS NULL THEN @owner_secret_key::text ELSE owner_secret_key END,
    root_key = coalesce(root_key, @root_key::text)
WHERE id = @id
RETURNING *;

-- name: InsertInvite :one
-- A new invite; no row when its code is taken (the caller draws another code).
INSERT INTO invites (id, mesh_id, token, token_bytes, code, max_uses, role, expires_at, created_by, version, capability_v2)
VALUES (@id, @mesh_id, @token, @token_bytes, @code, @max_uses, @role, @expires_at, sqlc.narg(created_by), @version, @capability_v2)
ON CONFLICT (code) WHERE code IS NOT NULL DO NOTHING
RETURNING *;

-- name: InviteByToken :one
SELECT * FROM invites WHERE token = @token;

-- name: InviteByCode :one
SELECT * FROM invites WHERE code = @code;

-- name: UseInvite :one
-- Consumes one use of a live invite, atomically: concurrent callers serialise on the row,
-- and only as many as max_uses get a row back. claimed_by is recorded when given (v2 claims).
UPDATE invites SET used_count = used_count + 1,
    claimed_by_pubkey = coalesce(sqlc.narg(claimed_by)::text, claimed_by_pubkey)
WHERE id = @id AND used_count < max_uses AND revoked_at IS NULL AND expires_at > now()
RETURNING id, used_count, max_uses;

-- name: InviteLiveMember :one
-- The unrevoked member with this key in the mesh, if any.
SELECT id, role FROM members WHERE mesh_id = @mesh_id AND peer_pubkey = @peer_pubkey AND revoked_at IS NULL;

-- name: InsertInvitedMember :one
-- A member who joined with an invite, with the invite's preset applied, linked to the
-- joiner's account when the join carried its bearer (user_id NULL otherwise).
INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role, role_tag, default_groups, message_mode, user_id)
VALUES (@id, @mesh_id, @peer_pubkey, @display_name, @role, sqlc.narg(role_tag), @default_groups, @message_mode, sqlc.narg(user_id))
RETURNING id;

-- name: CountRecentInvites :one
-- Invites made for a mesh in the last day (the API's per-mesh cap; invites_mesh_idx).
SELECT count(*)::int FROM invites WHERE mesh_id = @mesh_id AND created_at > now() - interval '1 day';

-- name: CountLiveMembers :one
-- A mesh's unrevoked members, counted up to @cap (the per-mesh cap on joins;
-- members_mesh_pubkey_live_key).
SELECT count(*)::int FROM (
    SELECT 1 FROM members WHERE mesh_id = @mesh_id AND revoked_at IS NULL LIMIT @cap::int
) live;

-- name: ListInvites :many
-- A mesh's invites, newest first (never their tokens: a token holds the root key).
SELECT id, code, role, max_uses, used_count, expires_at, created_at, revoked_at, created_by
FROM invites WHERE mesh_id = @mesh_id
ORDER BY created_at DESC, id
LIMIT @lim;

-- name: RevokeInvite :one
-- Revokes an unrevoked invite of a mesh, found by id or by code: joins and claims with it
-- are refused from the commit on.
UPDATE invites SET revoked_at = now()
WHERE mesh_id = @mesh_id AND (id = @ref OR code = upper(@ref)) AND revoked_at IS NULL
RETURNING id, code;
