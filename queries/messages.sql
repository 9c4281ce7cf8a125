-- Messages and their recipients.

-- name: PurgeExpiredMessages :execrows
-- Messages past their TTL go, with their deliveries (ON DELETE CASCADE), a batch at a time —
-- except those whose message_sent event the chainer has not appended yet (behind their
-- mesh's audit cursor, or with no cursor at all): the audit chain never loses an event.
DELETE FROM messages WHERE id IN (
    SELECT m.id FROM messages m
    WHERE m.expires_at < now()
      AND (m.audit_xid IS NULL OR EXISTS (
          SELECT 1 FROM audit_cursors c
          WHERE c.mesh_id = m.mesh_id AND (c.message_xid, c.message_id) >= (m.audit_xid, m.id)))
    ORDER BY m.expires_at LIMIT 5000
);

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
-- One statement stores a batch of sends: messages and their deliveries — one round trip.
-- Foreign keys are checked at the end of the statement, so deliveries may reference messages
-- inserted by a sibling clause. Each message records the storing transaction's id
-- (audit_xid): the audit chainer appends its message_sent event from this row (see migration
-- 7), so a send writes no audit row of its own. A clientMessageId that is already stored
-- makes the statement fail as a whole (unique violation: nothing of the batch is stored); the
-- caller then stores the sends one by one, acking the duplicate with the stored id. (ON
-- CONFLICT DO NOTHING would skip the duplicate and commit the rest when it has no delivery
-- rows to fail on: a multicast with nobody in scope — and the retry would then store the
-- rest twice.) @audited false stores no audit_xid: the message is never chained (meshload's
-- -no-audit measurement only).
WITH msg AS (
    INSERT INTO messages (id, mesh_id, sender_member_id, sender_presence_id, sender_session_pubkey,
        sender_member_pubkey, sender_name, target_spec, target_kind, priority, nonce, ciphertext,
        client_message_id, expires_at, audit_xid)
    SELECT unnest(@ids::text[]), unnest(@mesh_ids::text[]), unnest(@sender_member_ids::text[]),
           unnest(@sender_presence_ids::text[]), NULLIF(unnest(@sender_session_pubkeys::text[]), ''),
           unnest(@sender_member_pubkeys::text[]), NULLIF(unnest(@sender_names::text[]), ''),
           unnest(@target_specs::text[]), unnest(@target_kinds::text[]), unnest(@priorities::text[]),
           unnest(@nonces::text[]), unnest(@ciphertexts::text[]), NULLIF(unnest(@client_message_ids::text[]), ''),
           unnest(@expires_ats::timestamptz[]),
           CASE WHEN @audited::boolean THEN pg_current_xact_id() END
    RETURNING id
), dlv AS (
    INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at)
    SELECT unnest(@d_message_ids::text[]), unnest(@d_mesh_ids::text[]), unnest(@d_member_ids::text[]),
           NULLIF(unnest(@d_presence_ids::text[]), ''), unnest(@d_priorities::text[]), unnest(@d_expires_ats::timestamptz[])
    RETURNING 1
)
SELECT msg.id FROM msg
WHERE (SELECT count(*) FROM dlv) >= 0;
