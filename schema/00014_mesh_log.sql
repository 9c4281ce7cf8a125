-- Broadcast and group messages as one row in an ordered per-mesh log (issue 11, step 2).
--
-- Until now a multicast message was stored with one deliveries row per recipient, resolved
-- at send time: a broadcast to 50 wrote 51 rows and 50 leases and 50 marks later. Now it is
-- one messages row with mesh_seq, its position in its mesh's log, and each presence holds a
-- cursor into that log: log_acked, the highest position whose entries are done for it
-- (pushed and written, or acknowledged by client_ack clients, or not in its scope).
--
-- mesh_logs holds each mesh's head (the last position given out) and its epoch, a random
-- string made with the row: a cursor carries the epoch it counts in, so a cursor into a log
-- that was recreated (this migration rolled back and reapplied, a mesh restored) is detected
-- rather than read against positions that mean something else. purged_through is the
-- highest position the QUEUE_TTL purge deleted: a cursor below it lost entries it never
-- received, and its presence is told (messages_missed) instead of skipping them silently.
-- The head is advanced under the row's lock, held to commit, so within a mesh position order
-- is commit order: a reader that sees position 7 committed can never later meet a 6.
--
-- log_start is the head when the presence joined (multicast is not queued for peers that
-- were not there: message_status counts a presence as a recipient of the entries after it).
-- A presence of a mesh whose log did not exist yet when it joined has log_epoch NULL: the
-- whole log, when it comes, is after it.
--
-- Move: each multicast message that still has an undelivered copy gets a position, in
-- (created_at, id) order per mesh; each live presence's cursor goes just below the first
-- entry it still had a copy of (or to the head); the copies go. Down recreates a copy for
-- each live presence in scope of each entry above its cursor, then drops the columns.

-- +goose Up
CREATE TABLE mesh_logs (
    mesh_id        text PRIMARY KEY REFERENCES meshes (id) ON DELETE CASCADE,
    epoch          text NOT NULL,
    head           bigint NOT NULL DEFAULT 0,
    purged_through bigint NOT NULL DEFAULT 0
);
ALTER TABLE messages ADD COLUMN mesh_seq bigint;
ALTER TABLE presences
    ADD COLUMN log_epoch    text,
    ADD COLUMN log_start    bigint NOT NULL DEFAULT 0,
    ADD COLUMN log_acked    bigint NOT NULL DEFAULT 0,
    ADD COLUMN log_acked_at timestamptz;

WITH pend AS (
    SELECT DISTINCT m.id, m.mesh_id, m.created_at
    FROM deliveries d JOIN messages m ON m.id = d.message_id
    WHERE d.delivered_at IS NULL AND m.target_kind IN ('broadcast', 'group')
), numbered AS (
    SELECT id, row_number() OVER (PARTITION BY mesh_id ORDER BY created_at, id) AS seq FROM pend
)
UPDATE messages m SET mesh_seq = n.seq FROM numbered n WHERE m.id = n.id;

INSERT INTO mesh_logs (mesh_id, epoch, head)
SELECT s.id, gen_random_uuid()::text, coalesce(x.head, 0)
FROM meshes s
LEFT JOIN (SELECT mesh_id, max(mesh_seq) AS head FROM messages WHERE mesh_seq IS NOT NULL GROUP BY mesh_id) x
  ON x.mesh_id = s.id;

UPDATE presences p
SET log_epoch = l.epoch,
    log_acked = coalesce((SELECT min(m.mesh_seq) - 1 FROM deliveries d JOIN messages m ON m.id = d.message_id
                          WHERE d.recipient_presence_id = p.id AND d.delivered_at IS NULL AND m.mesh_seq IS NOT NULL),
                         l.head)
FROM mesh_logs l
WHERE l.mesh_id = p.mesh_id;
UPDATE presences SET log_start = log_acked;

DELETE FROM deliveries d USING messages m
WHERE m.id = d.message_id AND m.mesh_seq IS NOT NULL AND d.delivered_at IS NULL;

-- +goose Down
-- A copy per live, visible presence of another member in scope (group prefix rule, the
-- recipient's grants allow broadcast), for each entry above its cursor.
INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at)
SELECT m.id, m.mesh_id, p.member_id, p.id, 'now', m.expires_at
FROM messages m
JOIN mesh_logs l ON l.mesh_id = m.mesh_id
JOIN presences p ON p.mesh_id = m.mesh_id AND p.ended_at IS NULL AND p.visible AND p.member_id <> m.sender_member_id
JOIN members mb ON mb.id = p.member_id AND mb.revoked_at IS NULL
WHERE m.mesh_seq IS NOT NULL AND m.expires_at > now()
  AND (p.log_epoch IS NULL OR p.log_epoch = l.epoch)
  AND m.mesh_seq > CASE WHEN p.log_epoch IS NULL THEN 0 ELSE p.log_acked END
  AND (m.target_kind = 'broadcast' OR EXISTS (
      SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p.groups) = 'array' THEN p.groups ELSE '[]' END) g
      WHERE g->>'name' = substr(m.target_spec, 2) OR starts_with(g->>'name', substr(m.target_spec, 2) || '/')))
  AND coalesce(mb.peer_grants -> m.sender_member_pubkey, mb.peer_grants -> m.sender_session_pubkey,
               '["read", "dm", "broadcast", "state-read"]'::jsonb) ? 'broadcast';

ALTER TABLE presences DROP COLUMN log_acked_at, DROP COLUMN log_acked, DROP COLUMN log_start, DROP COLUMN log_epoch;
ALTER TABLE messages DROP COLUMN mesh_seq;
DROP TABLE mesh_logs;
