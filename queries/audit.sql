-- The per-mesh audit hash chain.

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
-- A whole chain in order (tests; verification reads it a page at a time).
SELECT id, mesh_id, event_type, actor_member_id, payload, prev_hash, hash, created_at
FROM audit_log WHERE mesh_id = @mesh_id ORDER BY id;

-- name: AuditChainPage :many
-- The next @lim rows of a chain after id @after_id, in order, for verification.
SELECT id, mesh_id, event_type, actor_member_id, payload, prev_hash, hash, created_at
FROM audit_log WHERE mesh_id = @mesh_id AND id > @after_id::bigint ORDER BY id LIMIT @lim::int;

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

-- name: AuditHorizon :one
-- The oldest transaction still running: every transaction below it has committed or aborted.
-- The chainer reads it once per round and takes both pending events and messages below it, so
-- the two sources are cut at the same point. Transaction ids travel as bigint (a 64-bit xid8
-- stays far below 2^63).
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon;

-- name: PendingAuditEvents :many
-- The oldest pending events of a mesh stored below @horizon (see AuditHorizon), in
-- (audit_xid, id) order. The caller holds the mesh's chain lock, appends them to the chain
-- and deletes them (DeleteAuditPending) in the same transaction.
SELECT p.id, p.mesh_id, p.event_type, p.actor_member_id, p.actor_display_name, p.payload, p.created_at,
       p.audit_xid::text::bigint AS audit_xid
FROM audit_pending p
WHERE p.mesh_id = @mesh_id AND p.audit_xid < (@horizon::bigint)::text::xid8
ORDER BY p.audit_xid, p.id
LIMIT @lim;

-- name: DeleteAuditPending :execrows
DELETE FROM audit_pending WHERE id = ANY(@ids::bigint[]);

-- name: UnchainedMessages :many
-- The next messages of a mesh whose message_sent events are not in the chain yet — past its
-- cursor — stored by transactions below @horizon (AuditHorizon: the oldest one still running
-- when the round began), in (audit_xid, id) order. Each of those transactions has committed
-- or aborted, so nothing can later appear behind them. The caller holds the mesh's chain lock,
-- appends the events and moves the cursor (MoveAuditCursor) in the same transaction.
-- sender_name is the sender session's display name at the time of the send.
WITH cur AS (
    SELECT coalesce((SELECT c.message_xid FROM audit_cursors c WHERE c.mesh_id = @mesh_id), '0'::xid8) AS xid,
           coalesce((SELECT c.message_id FROM audit_cursors c WHERE c.mesh_id = @mesh_id), '') AS id
)
SELECT m.id, m.sender_member_id, m.sender_name, m.target_spec, m.priority, m.created_at, m.audit_xid::text::bigint AS audit_xid
FROM messages m, cur
WHERE m.mesh_id = @mesh_id AND m.audit_xid IS NOT NULL
  AND (m.audit_xid, m.id) > (cur.xid, cur.id)
  AND m.audit_xid < (@horizon::bigint)::text::xid8
ORDER BY m.audit_xid, m.id
LIMIT @lim;

-- name: MoveAuditCursor :exec
-- The mesh's messages up to (@message_xid, @message_id) are chained.
INSERT INTO audit_cursors (mesh_id, message_xid, message_id)
VALUES (@mesh_id, (@message_xid::bigint)::text::xid8, @message_id)
ON CONFLICT (mesh_id) DO UPDATE SET message_xid = excluded.message_xid, message_id = excluded.message_id;

-- name: MeshesWithUnchainedMessages :many
-- The meshes with messages whose message_sent events are not chained yet (the chainer's
-- sweep): a loose index scan over the meshes that have such messages, then one index probe
-- each, just past its cursor.
WITH RECURSIVE m AS (
    (SELECT x.mesh_id FROM messages x WHERE x.audit_xid IS NOT NULL ORDER BY x.mesh_id LIMIT 1)
    UNION ALL
    SELECT (SELECT x.mesh_id FROM messages x WHERE x.audit_xid IS NOT NULL AND x.mesh_id > m.mesh_id ORDER BY x.mesh_id LIMIT 1)
    FROM m WHERE m.mesh_id IS NOT NULL
)
SELECT m.mesh_id::text AS mesh_id FROM m
WHERE m.mesh_id IS NOT NULL AND EXISTS (
    -- The cursor as scalar subqueries, not a join: so the row comparison is an index
    -- condition (one probe), not a filter over every message of the mesh.
    SELECT 1 FROM messages x
    WHERE x.mesh_id = m.mesh_id AND x.audit_xid IS NOT NULL
      AND (x.audit_xid, x.id) > (
          coalesce((SELECT c.message_xid FROM audit_cursors c WHERE c.mesh_id = m.mesh_id), '0'::xid8),
          coalesce((SELECT c.message_id FROM audit_cursors c WHERE c.mesh_id = m.mesh_id), ''))
)
LIMIT 1000;

-- name: AuditNextXid :one
-- The next transaction id to be assigned: every transaction that has committed so
-- far is below it. ChainCaughtUp chains until the horizon passes it.
SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid;

-- name: AuditBacklog :one
-- Whether a mesh has events the chainer has not linked yet: pending rows, or messages past
-- its cursor (typically held back by a transaction older than them still running). The
-- chainer keeps such a mesh noted, so it is retried on the next tick, not the next sweep.
-- Asked as "is the mesh's last message past the cursor" — one probe at the end of the
-- mesh's range of messages_audit_idx — not as "does any message lie past the cursor": the
-- generic plan of that form (a prepared statement's, after five runs) scanned the whole
-- messages table, 37 ms at 125 000 rows, on every chainer tick for every busy mesh.
SELECT (EXISTS (SELECT 1 FROM audit_pending p WHERE p.mesh_id = @mesh_id)
    OR coalesce((
        SELECT (x.audit_xid, x.id) > (coalesce(c.message_xid, '0'::xid8), coalesce(c.message_id, ''))
        FROM (SELECT m.audit_xid, m.id FROM messages m WHERE m.mesh_id = @mesh_id AND m.audit_xid IS NOT NULL
              ORDER BY m.audit_xid DESC, m.id DESC LIMIT 1) x
        LEFT JOIN audit_cursors c ON c.mesh_id = @mesh_id), false))::bool AS backlog;

-- name: AuditCursorsAhead :many
-- Meshes whose chain cursor, or a pending event, is at or beyond the cluster's next
-- transaction id: the database was copied logically into a cluster with a lower transaction
-- counter (docs/operations.md), and these meshes' new events would sort behind them.
(SELECT c.mesh_id FROM audit_cursors c
 WHERE c.message_xid >= pg_snapshot_xmax(pg_current_snapshot())
 LIMIT 100)
UNION
(SELECT p.mesh_id FROM audit_pending p
 WHERE p.audit_xid >= pg_snapshot_xmax(pg_current_snapshot())
 LIMIT 100);
