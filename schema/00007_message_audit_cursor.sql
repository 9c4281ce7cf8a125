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
-- block sends on a large table; each statement is idempotent, so a failed run can be
-- repeated.

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE messages ADD COLUMN IF NOT EXISTS audit_xid xid8;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS sender_name text;
CREATE TABLE IF NOT EXISTS audit_cursors (
    mesh_id     text PRIMARY KEY REFERENCES meshes (id) ON DELETE CASCADE,
    message_xid xid8 NOT NULL,
    message_id  text NOT NULL
);
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_audit_idx ON messages (mesh_id, audit_xid, id) WHERE audit_xid IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS messages_audit_idx;
DROP TABLE IF EXISTS audit_cursors;
ALTER TABLE messages DROP COLUMN IF EXISTS sender_name;
ALTER TABLE messages DROP COLUMN IF EXISTS audit_xid;
