-- The per-mesh log of broadcast and group messages, and the presences' cursors into it
-- (migration 14).

-- name: ClaimLog :many
-- The next log entries of several presences held here, after each one's cursor: the
-- greater of its stored cursor (log_acked) and @froms, what this socket already read, each
-- counted in its epoch (@epochs: the socket's, '' before its first read). Only for the
-- socket that owns the presence (@conns, its connection epoch): a socket taken over reads
-- nothing, so it cannot move the cursor past what its successor has not read. A pure read: an
-- entry is done for a presence when its cursor passes it (AdvanceLogCursors), which the
-- socket does once the push is written (or acknowledged). Scope — visible, not the sender's
-- member, in the group, the recipient's grants allow broadcast — is decided by the caller,
-- per recipient, now.
--
-- Two kinds of rows. One per presence (kind 'p', entry columns empty): where it reads from
-- (from_seq) and what decides its scope; absent for a presence that ended, is revoked, or
-- whose mesh has no log yet. reset: neither the stored cursor nor the socket's counts in the
-- log's epoch (the log was recreated); missed: entries after the cursor were purged
-- (QUEUE_TTL) before it read them; from_seq is the head after a reset, past the purged
-- entries after a miss. adopt: the stored cursor has no epoch — the presence joined before
-- its mesh had a log, or was made by an instance of the release before the log — so it
-- starts after the last entry stored before it connected, and the caller stores that.
-- Entries past their TTL (waiting for the purge) are not read. Then the entries (kind 'e', presence columns
-- empty), once per distinct (mesh, from_seq) — the presences of a mesh woken together read
-- from the same position, so an entry's ciphertext crosses once, not once per recipient:
-- positions (from_seq, from_seq + @lim]. The caller gives each presence the entries of its
-- mesh in (from_seq, min(from_seq + @lim, head)]: a position up to the head that is not
-- there is gone (purged, or its sender deleted), never still to come — the head is
-- advanced in the transaction that stores the entry, so both are seen together.
WITH t AS (
    SELECT unnest(@presence_ids::text[]) AS presence_id, unnest(@froms::bigint[]) AS from_seq,
           unnest(@epochs::text[]) AS epoch, unnest(@conns::bigint[]) AS conn
), tp AS (
    -- Each lookup a lateral probe by key, fenced with LIMIT 1 so the planner cannot flatten
    -- it back into a join: the generic plan of a join (a prepared statement's, after five
    -- runs) scanned every live presence and hashed them by mesh — 8.9 ms a read during a
    -- reconnect storm of 4 000 sessions.
    SELECT t.presence_id, p.mesh_id, p.member_id, p.groups, p.visible, mb.peer_grants, l.epoch, l.head,
           l.purged_through,
           p.log_epoch IS NOT NULL AND p.log_epoch <> l.epoch AND t.epoch <> l.epoch AS reset,
           p.log_epoch IS NULL AND t.epoch <> l.epoch AS adopt,
           greatest(c.stored, CASE WHEN t.epoch = l.epoch THEN t.from_seq END) AS cursor
    FROM t
    CROSS JOIN LATERAL (
        SELECT p.mesh_id, p.member_id, p.groups, p.visible, p.log_epoch, p.log_acked, p.connected_at
        FROM presences p WHERE p.id = t.presence_id AND p.ended_at IS NULL AND p.connection_epoch = t.conn
        LIMIT 1
    ) p
    CROSS JOIN LATERAL (SELECT mb.peer_grants FROM members mb WHERE mb.id = p.member_id AND mb.revoked_at IS NULL LIMIT 1) mb
    CROSS JOIN LATERAL (SELECT l.epoch, l.head, l.purged_through FROM mesh_logs l WHERE l.mesh_id = p.mesh_id LIMIT 1) l
    CROSS JOIN LATERAL (
        SELECT CASE WHEN p.log_epoch IS NULL THEN greatest(l.purged_through, (
                        SELECT coalesce(max(m.mesh_seq), 0) FROM messages m
                        WHERE m.mesh_id = p.mesh_id AND m.mesh_seq IS NOT NULL AND m.created_at < p.connected_at))
                    WHEN p.log_epoch = l.epoch THEN p.log_acked END AS stored
    ) c
), tc AS (
    SELECT tp.*, tp.reset OR coalesce(tp.cursor, 0) < tp.purged_through AS missed,
           CASE WHEN tp.reset THEN tp.head ELSE greatest(coalesce(tp.cursor, 0), tp.purged_through) END AS from_seq
    FROM tp
)
SELECT 'p'::text AS kind, tc.presence_id::text AS presence_id, tc.mesh_id::text AS mesh_id, tc.epoch::text AS epoch,
       tc.from_seq::bigint AS from_seq, tc.head::bigint AS head, tc.missed::bool AS missed, tc.adopt::bool AS adopt, tc.member_id::text AS member_id,
       tc.groups::jsonb AS groups, tc.visible::bool AS visible, tc.peer_grants::jsonb AS peer_grants,
       0::bigint AS seq, ''::text AS message_id, ''::text AS sender_member_id, ''::text AS sender_session_pubkey,
       ''::text AS sender_member_pubkey, ''::text AS target_kind, ''::text AS target_spec, ''::text AS priority,
       ''::text AS nonce, ''::text AS ciphertext, now()::timestamptz AS created_at, ''::text AS client_message_id
FROM tc
UNION ALL
SELECT 'e', '', r.mesh_id, '', r.from_seq, 0, false, false, '', '[]'::jsonb, false, '{}'::jsonb,
       e.mesh_seq, e.id, e.sender_member_id, coalesce(e.sender_session_pubkey, ''), e.sender_member_pubkey,
       e.target_kind, e.target_spec, e.priority, e.nonce, e.ciphertext, e.created_at, coalesce(e.client_message_id, '')
FROM (SELECT DISTINCT tc.mesh_id, tc.from_seq FROM tc) r
CROSS JOIN LATERAL (
    SELECT m.mesh_seq, m.id, m.sender_member_id, m.sender_session_pubkey, m.sender_member_pubkey, m.target_kind,
           m.target_spec, m.priority, m.nonce, m.ciphertext, m.created_at, m.client_message_id
    FROM messages m
    WHERE m.mesh_id = r.mesh_id AND m.mesh_seq > r.from_seq AND m.mesh_seq <= r.from_seq + @lim::int
      AND m.expires_at > now()
    ORDER BY m.mesh_seq
) e;

-- name: AdvanceLogCursors :execrows
-- Cursors move forward (never back) to the positions given, in the epoch given: a cursor
-- still in another epoch (a reset, or one that had none) takes the new epoch and position.
-- Only from the socket that owns the presence (@conns): a socket taken over meanwhile wrote
-- to a connection its client has left.
UPDATE presences p
SET log_acked = CASE WHEN p.log_epoch IS DISTINCT FROM x.epoch THEN x.seq ELSE greatest(p.log_acked, x.seq) END,
    log_epoch = x.epoch, log_acked_at = now()
FROM (SELECT unnest(@presence_ids::text[]) AS id, unnest(@epochs::text[]) AS epoch, unnest(@seqs::bigint[]) AS seq,
             unnest(@conns::bigint[]) AS conn) x
WHERE p.id = x.id AND p.connection_epoch = x.conn AND (p.log_epoch IS DISTINCT FROM x.epoch OR p.log_acked < x.seq);

-- name: LogRecipients :many
-- message_status for a log entry: the presences that could have received it — of its mesh,
-- another member's, there when it was stored (log_start below it, in the log's epoch), and
-- live or, if ended, having read past it (multicast is not queued for peers that left) —
-- with whether their cursor passed it. Scope (visible, group, grants) is applied by the
-- caller, as delivery does (the first 5000; the reply lists at most 1000).
SELECT (p.log_acked >= @seq::bigint)::bool AS delivered, p.log_acked_at, p.groups, p.visible, mb.peer_grants,
       coalesce(p.display_name, mb.display_name)::text AS name,
       coalesce(p.session_pubkey, mb.peer_pubkey)::text AS pubkey
FROM presences p
JOIN members mb ON mb.id = p.member_id
JOIN mesh_logs l ON l.mesh_id = p.mesh_id
WHERE p.mesh_id = @mesh_id AND p.member_id <> @sender_member_id
  AND (p.log_epoch IS NULL OR (p.log_epoch = l.epoch AND p.log_start < @seq::bigint))
  AND (p.ended_at IS NULL OR (p.log_epoch = l.epoch AND p.log_acked >= @seq::bigint))
  AND (mb.revoked_at IS NULL OR p.log_acked >= @seq::bigint)
ORDER BY p.connected_at, p.id
LIMIT 5000;
