-- The per-mesh audit hash chain.

-- name: AuditLockMesh :exec
-- Serialises chain appends for one mesh across every instance until the transaction ends.
SELECT pg_advisory_xact_lock(@lock_key::bigint);

-- name: AuditTail :one
SELECT hash FROM audit_log WHERE mesh_id = @mesh_id ORDER BY id DESC LIMIT 1;

-- name: InsertAuditRows :exec
-- Appends rows in array order: set-returning functions in one select list advance in
-- lockstep (Postgres 10+), and identity ids are drawn in row order. An empty actor id or
-- name stands for NULL (text[] parameters cannot carry NULLs through sqlc).
INSERT INTO audit_log (mesh_id, event_type, actor_member_id, actor_display_name, payload, prev_hash, hash, created_at)
SELECT unnest(@mesh_ids::text[]), unnest(@event_types::text[]), NULLIF(unnest(@actor_member_ids::text[]), ''),
       NULLIF(unnest(@actor_display_names::text[]), ''), unnest(@payloads::text[])::jsonb,
       unnest(@prev_hashes::text[]), unnest(@hashes::text[]), unnest(@created_ats::timestamptz[]);

-- name: AuditChain :many
-- A whole chain in order, for verification.
SELECT id, mesh_id, event_type, actor_member_id, payload, prev_hash, hash, created_at
FROM audit_log WHERE mesh_id = @mesh_id ORDER BY id;

-- name: AuditPage :many
SELECT id, event_type, actor_member_id, actor_display_name, payload, hash, created_at
FROM audit_log
WHERE mesh_id = @mesh_id AND (sqlc.narg(event_type)::text IS NULL OR event_type = sqlc.narg(event_type))
ORDER BY id DESC
LIMIT @lim OFFSET @off;

-- name: AuditCount :one
SELECT count(*) FROM audit_log
WHERE mesh_id = @mesh_id AND (sqlc.narg(event_type)::text IS NULL OR event_type = sqlc.narg(event_type));

-- name: InsertAuditPending :exec
-- Audit events to be chained later (see audit_pending); an empty actor id or name is NULL.
INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
SELECT unnest(@mesh_ids::text[]), unnest(@event_types::text[]), NULLIF(unnest(@actor_member_ids::text[]), ''),
       NULLIF(unnest(@actor_display_names::text[]), ''), unnest(@payloads::text[])::jsonb,
       unnest(@created_ats::timestamptz[]);

-- name: MeshesWithPendingAudit :many
-- The meshes with events to chain, by a loose index scan (one index probe per mesh): the
-- chainer asks ten times a second, and a plain DISTINCT read the whole table each time —
-- 16 MB of a queue table that churns (every row is inserted and deleted).
WITH RECURSIVE m AS (
    (SELECT p.mesh_id FROM audit_pending p ORDER BY p.mesh_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.mesh_id FROM audit_pending p WHERE p.mesh_id > m.mesh_id ORDER BY p.mesh_id LIMIT 1)
    FROM m WHERE m.mesh_id IS NOT NULL
)
SELECT m.mesh_id::text AS mesh_id FROM m WHERE m.mesh_id IS NOT NULL LIMIT 1000;

-- name: TakeAuditPending :many
-- The oldest pending events of a mesh, removed here and appended to the chain by the
-- caller in the same transaction (which holds the mesh's chain lock).
DELETE FROM audit_pending
WHERE id IN (SELECT p.id FROM audit_pending p WHERE p.mesh_id = @mesh_id ORDER BY p.id LIMIT @lim)
RETURNING id, mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at;
