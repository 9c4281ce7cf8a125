-- message_sent audit events are chained straight from the messages table.
--
-- Until now each stored message also wrote an audit_pending row, which the chainer deleted
-- again when it appended the event to the chain: two row writes, two index entries and a
-- jsonb payload per message, about a quarter of the store statement's cost. Now a message
-- carries what its message_sent event needs (sender_name; the rest was there already) and
-- the id of the transaction that stored it (audit_xid), and the chainer keeps, per mesh, a
-- cursor: the (audit_xid, id) of the last message it chained. Messages are chained in
-- (audit_xid, id) order, and only those whose transaction id is below the oldest still
-- running one (pg_snapshot_xmin): every transaction below that has committed or aborted, so
-- no message can appear behind the cursor later. Messages stored before this migration (and
-- by older brokers during a rolling deploy) have audit_xid NULL: their events are in
-- audit_pending, as before.
--
-- No transaction around this file: the index is built CONCURRENTLY so the deploy does not
-- block sends on a large table; each statement can be repeated, so a failed run can be
-- run again.

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE messages ADD COLUMN IF NOT EXISTS audit_xid xid8;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS sender_name text;
CREATE TABLE IF NOT EXISTS audit_cursors (
    mesh_id     text PRIMARY KEY REFERENCES meshes (id) ON DELETE CASCADE,
    message_xid xid8 NOT NULL,
    message_id  text NOT NULL
);
-- A build that failed half-way leaves an invalid index behind; drop it so a re-run builds it.
DROP INDEX CONCURRENTLY IF EXISTS messages_audit_idx;
CREATE INDEX CONCURRENTLY messages_audit_idx ON messages (mesh_id, audit_xid, id) WHERE audit_xid IS NOT NULL;

-- +goose Down
-- Older brokers chain only audit_pending: every message whose event is not chained yet gets
-- its event back there first, in chain order, so a rollback loses none — and its mesh's
-- cursor moves past it in the same statement, so a repeated run (this file has no
-- transaction around it) copies nothing twice. (Rolling back through migration 8 has done
-- this already, in order with the pending events; this is for a database at 7.) Guarded, so
-- a run that failed after dropping the cursor table can be repeated. Run it with every
-- broker of migration 7 or later stopped (docs/operations.md).
-- +goose StatementBegin
DO $$
BEGIN
    IF to_regclass('audit_cursors') IS NULL OR NOT EXISTS (
        SELECT 1 FROM information_schema.columns WHERE table_name = 'messages' AND column_name = 'audit_xid') THEN
        RETURN;
    END IF;
    WITH unchained AS (
        SELECT m.id, m.mesh_id, m.sender_member_id, m.sender_name, m.priority, m.target_spec, m.created_at, m.audit_xid
        FROM messages m
        WHERE m.audit_xid IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM audit_cursors c
            WHERE c.mesh_id = m.mesh_id AND (c.message_xid, c.message_id) >= (m.audit_xid, m.id))
    ), copied AS (
        INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
        SELECT u.mesh_id, 'message_sent', u.sender_member_id, u.sender_name,
               jsonb_build_object('priority', u.priority, 'targetSpec', u.target_spec),
               date_trunc('milliseconds', u.created_at)
        FROM unchained u
        ORDER BY u.audit_xid, u.id
        RETURNING 1
    )
    INSERT INTO audit_cursors (mesh_id, message_xid, message_id)
    SELECT DISTINCT ON (u.mesh_id) u.mesh_id, u.audit_xid, u.id
    FROM unchained u
    WHERE (SELECT count(*) FROM copied) >= 0
    ORDER BY u.mesh_id, u.audit_xid DESC, u.id DESC
    ON CONFLICT (mesh_id) DO UPDATE SET message_xid = excluded.message_xid, message_id = excluded.message_id;
END
$$;
-- +goose StatementEnd
DROP INDEX CONCURRENTLY IF EXISTS messages_audit_idx;
DROP TABLE IF EXISTS audit_cursors;
ALTER TABLE messages DROP COLUMN IF EXISTS sender_name;
ALTER TABLE messages DROP COLUMN IF EXISTS audit_xid;
