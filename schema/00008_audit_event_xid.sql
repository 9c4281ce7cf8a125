-- Pending audit events record their transaction too, so the chainer orders both sources the
-- same way.
--
-- Since migration 7 the chainer appends message_sent events only from transactions below the
-- oldest running one, while hello and close events in audit_pending were appended at once: a
-- peer_left queued after a message could be chained before that message's message_sent.
-- Transaction ids follow causality — a transaction that starts after another committed gets a
-- later id — so chaining both sources in transaction-id order, below one horizon computed
-- once per round, keeps every chain causally ordered. The default fills the column for every
-- writer, older brokers in a rolling deploy included; existing rows get this migration's
-- transaction, which has ended by the time anything reads them.

-- +goose Up
ALTER TABLE audit_pending ADD COLUMN audit_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- +goose Down
-- Older brokers chain audit_pending by id. While both sources still carry their transaction,
-- re-queue the pending events and the events of messages not chained yet together, in
-- transaction order, and move each mesh's cursor past its messages — one statement, so the
-- queue is replaced or left as it was. (Migration 7's down step then finds nothing to copy.)
WITH unchained AS (
    SELECT m.id, m.mesh_id, m.sender_member_id, m.sender_name, m.priority, m.target_spec, m.created_at, m.audit_xid
    FROM messages m
    WHERE m.audit_xid IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM audit_cursors c
        WHERE c.mesh_id = m.mesh_id AND (c.message_xid, c.message_id) >= (m.audit_xid, m.id))
), taken AS (
    DELETE FROM audit_pending p
    RETURNING p.id, p.mesh_id, p.event_type, p.actor_member_id, p.actor_display_name, p.payload, p.created_at, p.audit_xid
), requeued AS (
    INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
    SELECT e.mesh_id, e.event_type, e.actor_member_id, e.actor_display_name, e.payload, e.created_at
    FROM (
        SELECT t.mesh_id, t.event_type, t.actor_member_id, t.actor_display_name, t.payload, t.created_at,
               t.audit_xid, 0 AS src, t.id AS pending_id, '' AS message_id
        FROM taken t
        UNION ALL
        SELECT u.mesh_id, 'message_sent', u.sender_member_id, u.sender_name,
               jsonb_build_object('priority', u.priority, 'targetSpec', u.target_spec),
               date_trunc('milliseconds', u.created_at), u.audit_xid, 1, 0, u.id
        FROM unchained u
    ) e
    ORDER BY e.audit_xid, e.src, e.pending_id, e.message_id
    RETURNING 1
)
INSERT INTO audit_cursors (mesh_id, message_xid, message_id)
SELECT DISTINCT ON (u.mesh_id) u.mesh_id, u.audit_xid, u.id
FROM unchained u
WHERE (SELECT count(*) FROM requeued) >= 0
ORDER BY u.mesh_id, u.audit_xid DESC, u.id DESC
ON CONFLICT (mesh_id) DO UPDATE SET message_xid = excluded.message_xid, message_id = excluded.message_id;
ALTER TABLE audit_pending DROP COLUMN audit_xid;
