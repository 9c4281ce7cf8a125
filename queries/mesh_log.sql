-- The per-mesh log of broadcast and group messages, and the presences' cursors into it
-- (migration 14).

-- name: ClaimLog :many
-- The next log entries of each of several presences held here, in log order, after its
-- cursor: the greater of its stored cursor (log_acked) and @froms, what this socket already
-- read, each counted in its epoch (@epochs: the socket's, '' before its first read). A pure
-- read: an entry is done for a presence when its cursor passes it (AdvanceLogCursors),
-- which the socket does once the push is written (or acknowledged). Scope — visible, not
-- the sender's member, in the group, the recipient's grants allow broadcast — is decided by
-- the caller, per recipient, now. A presence with no entry comes back once, the entry
-- columns empty (seq 0); one whose mesh has no log yet, or that ended, not at all.
-- reset: neither the stored cursor nor the socket's counts in the log's epoch (the log was
-- recreated); missed: entries after the cursor were purged (QUEUE_TTL) before it read them.
-- from_seq is where reading resumes: the head after a reset, past the purged entries after
-- a miss. A stored cursor with no epoch (the presence joined before its mesh had a log)
-- counts from the log's start.
WITH t AS (
    SELECT unnest(@presence_ids::text[]) AS presence_id, unnest(@froms::bigint[]) AS from_seq,
           unnest(@epochs::text[]) AS epoch
), tp AS (
    SELECT t.presence_id, p.mesh_id, p.member_id, p.groups, p.visible, mb.peer_grants, l.epoch, l.head,
           l.purged_through,
           p.log_epoch IS NOT NULL AND p.log_epoch <> l.epoch AND t.epoch <> l.epoch AS reset,
           greatest(CASE WHEN p.log_epoch IS NULL THEN 0 WHEN p.log_epoch = l.epoch THEN p.log_acked END,
                    CASE WHEN t.epoch = l.epoch THEN t.from_seq END) AS cursor
    FROM t
    JOIN presences p ON p.id = t.presence_id AND p.ended_at IS NULL
    JOIN members mb ON mb.id = p.member_id AND mb.revoked_at IS NULL
    JOIN mesh_logs l ON l.mesh_id = p.mesh_id
), tc AS (
    SELECT tp.*, tp.reset OR coalesce(tp.cursor, 0) < tp.purged_through AS missed,
           CASE WHEN tp.reset THEN tp.head ELSE greatest(coalesce(tp.cursor, 0), tp.purged_through) END AS from_seq
    FROM tp
)
SELECT tc.presence_id::text AS presence_id, tc.epoch::text AS epoch, tc.from_seq::bigint AS from_seq,
       tc.missed::bool AS missed, tc.member_id::text AS member_id, tc.groups, tc.visible::bool AS visible,
       tc.peer_grants, coalesce(e.mesh_seq, 0)::bigint AS seq, coalesce(e.id, '')::text AS message_id,
       coalesce(e.sender_member_id, '')::text AS sender_member_id,
       coalesce(e.sender_session_pubkey, '')::text AS sender_session_pubkey,
       coalesce(e.sender_member_pubkey, '')::text AS sender_member_pubkey,
       coalesce(e.target_kind, '')::text AS target_kind, coalesce(e.target_spec, '')::text AS target_spec,
       coalesce(e.priority, '')::text AS priority, coalesce(e.nonce, '')::text AS nonce,
       coalesce(e.ciphertext, '')::text AS ciphertext, coalesce(e.created_at, now())::timestamptz AS created_at,
       coalesce(e.client_message_id, '')::text AS client_message_id
FROM tc
LEFT JOIN LATERAL (
    SELECT m.mesh_seq, m.id, m.sender_member_id, m.sender_session_pubkey, m.sender_member_pubkey, m.target_kind,
           m.target_spec, m.priority, m.nonce, m.ciphertext, m.created_at, m.client_message_id
    FROM messages m
    WHERE m.mesh_id = tc.mesh_id AND m.mesh_seq > tc.from_seq AND m.mesh_seq IS NOT NULL
    ORDER BY m.mesh_seq
    LIMIT @lim
) e ON true
ORDER BY tc.presence_id, e.mesh_seq;

-- name: AdvanceLogCursors :execrows
-- Cursors move forward (never back) to the positions given, in the epoch given: a cursor
-- still in another epoch (a reset, or one that had none) takes the new epoch and position.
UPDATE presences p
SET log_acked = CASE WHEN p.log_epoch IS DISTINCT FROM x.epoch THEN x.seq ELSE greatest(p.log_acked, x.seq) END,
    log_epoch = x.epoch, log_acked_at = now()
FROM (SELECT unnest(@presence_ids::text[]) AS id, unnest(@epochs::text[]) AS epoch, unnest(@seqs::bigint[]) AS seq) x
WHERE p.id = x.id AND (p.log_epoch IS DISTINCT FROM x.epoch OR p.log_acked < x.seq);

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
