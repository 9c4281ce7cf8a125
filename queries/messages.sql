-- Messages and their recipients.

-- name: PurgeExpiredMessages :execrows
-- Messages past their TTL go, with their deliveries (ON DELETE CASCADE), a batch at a time —
-- except those whose message_sent event the chainer has not appended yet (behind their
-- mesh's audit cursor, or with no cursor at all): the audit chain never loses an event.
-- Purged log entries raise their mesh log's purged_through, so a cursor left below it (a
-- presence in its grace window longer than QUEUE_TTL) is known to have missed them.
WITH gone AS (
    DELETE FROM messages WHERE id IN (
        SELECT m.id FROM messages m
        WHERE m.expires_at < now()
          AND (m.audit_xid IS NULL OR EXISTS (
              SELECT 1 FROM audit_cursors c
              WHERE c.mesh_id = m.mesh_id AND (c.message_xid, c.message_id) >= (m.audit_xid, m.id)))
        ORDER BY m.expires_at LIMIT 5000
    )
    RETURNING mesh_id, mesh_seq
), logs AS (
    UPDATE mesh_logs l SET purged_through = x.last
    FROM (SELECT mesh_id, max(mesh_seq) AS last FROM gone WHERE mesh_seq IS NOT NULL GROUP BY mesh_id) x
    WHERE l.mesh_id = x.mesh_id AND l.purged_through < x.last
)
SELECT count(*) FROM gone;

-- name: ResolveDirectTargets :many
-- ResolveDirectTarget for many (mesh, target) pairs at once: ord is the pair's 1-based
-- position; pairs that name nobody are absent. A member key wins over a session key (a
-- direct message to a member key reaches only that member's sessions, whatever session
-- keys other members announced before the hello refused such keys); then a live session
-- key; then the session key of an ended presence, which routes to its member.
SELECT t.ord::int AS ord, r.kind::text AS kind, r.presence_id::text AS presence_id,
       r.member_id::text AS member_id, r.peer_grants
FROM (SELECT unnest(@mesh_ids::text[]) AS mesh_id, unnest(@targets::text[]) AS target,
             generate_subscripts(@targets::text[], 1) AS ord) t
CROSS JOIN LATERAL (
    SELECT x.kind, x.presence_id, x.member_id, x.peer_grants FROM (
        (SELECT 'member' AS kind, '' AS presence_id, m.id AS member_id, m.peer_grants, 1 AS rank
         FROM members m WHERE m.mesh_id = t.mesh_id AND m.peer_pubkey = t.target AND m.revoked_at IS NULL
         LIMIT 1)
        UNION ALL
        (SELECT 'session', p.id, p.member_id, m.peer_grants, 2
         FROM presences p JOIN members m ON m.id = p.member_id
         WHERE p.mesh_id = t.mesh_id AND p.session_pubkey = t.target AND p.ended_at IS NULL AND m.revoked_at IS NULL
         LIMIT 1)
        UNION ALL
        (SELECT 'stale', '', p.member_id, m.peer_grants, 3
         FROM presences p JOIN members m ON m.id = p.member_id
         WHERE p.mesh_id = t.mesh_id AND p.session_pubkey = t.target AND p.ended_at IS NOT NULL AND m.revoked_at IS NULL
         ORDER BY p.ended_at DESC LIMIT 1)
    ) x ORDER BY x.rank LIMIT 1
) r;

-- name: ExistingClientMessages :many
-- Which (sender, clientMessageId) pairs are already stored, for idempotent retries.
SELECT m.sender_member_id, m.client_message_id::text AS client_message_id, m.id
FROM messages m
JOIN (SELECT unnest(@sender_member_ids::text[]) AS s, unnest(@client_message_ids::text[]) AS c) k
  ON m.sender_member_id = k.s AND m.client_message_id = k.c;

-- name: StoreBatch :many
-- One statement stores a batch of sends: messages and the deliveries of direct ones — one
-- round trip. Foreign keys are checked at the end of the statement, so deliveries may
-- reference messages inserted by a sibling clause. A broadcast or group message (@log true)
-- gets no deliveries: it is the next position of its mesh's log (mesh_seq), given out by
-- advancing the log's head, whose row lock is held to commit — so positions are committed
-- in order — and positions follow the batch's order within each mesh. Each message records
-- the storing transaction's id (audit_xid): the audit chainer appends its message_sent event
-- from this row (see migration 7), so a send writes no audit row of its own. A
-- clientMessageId that is already stored makes the statement fail as a whole (unique
-- violation: nothing of the batch is stored, no position given out); the caller then stores
-- the sends one by one, acking the duplicate with the stored id. @audited false stores no
-- audit_xid: the message is never chained (meshload's -no-audit measurement only).
WITH inp AS (
    SELECT unnest(@ids::text[]) AS id, unnest(@mesh_ids::text[]) AS mesh_id, unnest(@logged::bool[]) AS logged,
           generate_subscripts(@ids::text[], 1) AS ord
), heads AS (
    INSERT INTO mesh_logs AS l (mesh_id, epoch, head)
    SELECT mesh_id, gen_random_uuid()::text, count(*) FROM inp WHERE logged GROUP BY mesh_id
    ORDER BY mesh_id -- every batch locks its meshes' log rows in one order: no deadlock
    ON CONFLICT (mesh_id) DO UPDATE SET head = l.head + excluded.head
    RETURNING l.mesh_id, l.head
), seqs AS (
    SELECT inp.id, heads.head - count(*) OVER w + row_number() OVER (w ORDER BY inp.ord) AS seq
    FROM inp JOIN heads ON heads.mesh_id = inp.mesh_id
    WHERE inp.logged
    WINDOW w AS (PARTITION BY inp.mesh_id)
), msg AS (
    INSERT INTO messages (id, mesh_id, sender_member_id, sender_presence_id, sender_session_pubkey,
        sender_member_pubkey, sender_name, target_spec, target_kind, priority, nonce, ciphertext,
        client_message_id, expires_at, audit_xid, mesh_seq)
    SELECT x.id, x.mesh_id, x.sender_member_id, x.sender_presence_id, x.sender_session_pubkey, x.sender_member_pubkey,
           x.sender_name, x.target_spec, x.target_kind, x.priority, x.nonce, x.ciphertext, x.client_message_id,
           x.expires_at, x.audit_xid, seqs.seq
    FROM (
        SELECT unnest(@ids::text[]) AS id, unnest(@mesh_ids::text[]) AS mesh_id, unnest(@sender_member_ids::text[]) AS sender_member_id,
               unnest(@sender_presence_ids::text[]) AS sender_presence_id,
               NULLIF(unnest(@sender_session_pubkeys::text[]), '') AS sender_session_pubkey,
               unnest(@sender_member_pubkeys::text[]) AS sender_member_pubkey, NULLIF(unnest(@sender_names::text[]), '') AS sender_name,
               unnest(@target_specs::text[]) AS target_spec, unnest(@target_kinds::text[]) AS target_kind,
               unnest(@priorities::text[]) AS priority, unnest(@nonces::text[]) AS nonce, unnest(@ciphertexts::text[]) AS ciphertext,
               NULLIF(unnest(@client_message_ids::text[]), '') AS client_message_id, unnest(@expires_ats::timestamptz[]) AS expires_at,
               CASE WHEN @audited::boolean THEN pg_current_xact_id() END AS audit_xid
    ) x LEFT JOIN seqs ON seqs.id = x.id
    RETURNING id
), dlv AS (
    INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at)
    SELECT unnest(@d_message_ids::text[]), unnest(@d_mesh_ids::text[]), unnest(@d_member_ids::text[]),
           NULLIF(unnest(@d_presence_ids::text[]), ''), unnest(@d_priorities::text[]), unnest(@d_expires_ats::timestamptz[])
    RETURNING 1
)
SELECT msg.id FROM msg
WHERE (SELECT count(*) FROM dlv) >= 0;
