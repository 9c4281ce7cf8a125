-- Messages and their recipients.

-- name: PurgeExpiredMessages :execrows
-- Messages past their TTL go, with their deliveries (ON DELETE CASCADE), a batch at a time.
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages WHERE expires_at < now() ORDER BY expires_at LIMIT 5000
);

-- name: ResolveDirectTargets :many
-- ResolveDirectTarget for many (mesh, target) pairs at once: ord is the pair's 1-based
-- position; pairs that name nobody are absent.
SELECT t.ord::int AS ord, r.kind::text AS kind, r.presence_id::text AS presence_id,
       r.member_id::text AS member_id, r.peer_grants
FROM (SELECT unnest(@mesh_ids::text[]) AS mesh_id, unnest(@targets::text[]) AS target,
             generate_subscripts(@targets::text[], 1) AS ord) t
CROSS JOIN LATERAL (
    SELECT x.kind, x.presence_id, x.member_id, x.peer_grants FROM (
        (SELECT 'session' AS kind, p.id AS presence_id, p.member_id, m.peer_grants, 1 AS rank
         FROM presences p JOIN members m ON m.id = p.member_id
         WHERE p.mesh_id = t.mesh_id AND p.session_pubkey = t.target AND p.ended_at IS NULL AND m.revoked_at IS NULL
         LIMIT 1)
        UNION ALL
        (SELECT 'member', '', m.id, m.peer_grants, 2
         FROM members m WHERE m.mesh_id = t.mesh_id AND m.peer_pubkey = t.target AND m.revoked_at IS NULL
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
-- One statement stores a batch of sends: messages, their deliveries and their (pending)
-- audit events — one round trip instead of three. Foreign keys are
-- checked at the end of the statement, so deliveries may reference messages inserted by a
-- sibling clause. A clientMessageId that is already stored makes the statement fail as a
-- whole (unique violation: nothing of the batch is stored); the caller then stores the sends
-- one by one, acking the duplicate with the stored id. (ON CONFLICT DO NOTHING would skip the
-- duplicate and commit the rest when it has no delivery rows to fail on: a multicast with
-- nobody in scope — and the retry would then store the rest twice.)
WITH msg AS (
    INSERT INTO messages (id, mesh_id, sender_member_id, sender_presence_id, sender_session_pubkey,
        sender_member_pubkey, target_spec, target_kind, priority, nonce, ciphertext, client_message_id, expires_at)
    SELECT unnest(@ids::text[]), unnest(@mesh_ids::text[]), unnest(@sender_member_ids::text[]),
           unnest(@sender_presence_ids::text[]), NULLIF(unnest(@sender_session_pubkeys::text[]), ''),
           unnest(@sender_member_pubkeys::text[]),
           unnest(@target_specs::text[]), unnest(@target_kinds::text[]), unnest(@priorities::text[]),
           unnest(@nonces::text[]), unnest(@ciphertexts::text[]), NULLIF(unnest(@client_message_ids::text[]), ''),
           unnest(@expires_ats::timestamptz[])
    RETURNING id
), dlv AS (
    INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at)
    SELECT unnest(@d_message_ids::text[]), unnest(@d_mesh_ids::text[]), unnest(@d_member_ids::text[]),
           NULLIF(unnest(@d_presence_ids::text[]), ''), unnest(@d_priorities::text[]), unnest(@d_expires_ats::timestamptz[])
    RETURNING 1
), aud AS (
    INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
    SELECT unnest(@a_mesh_ids::text[]), unnest(@a_event_types::text[]), NULLIF(unnest(@a_actor_member_ids::text[]), ''),
           NULLIF(unnest(@a_actor_display_names::text[]), ''), unnest(@a_payloads::text[])::jsonb,
           unnest(@a_created_ats::timestamptz[])
    RETURNING 1
)
SELECT msg.id FROM msg
WHERE (SELECT count(*) FROM dlv) >= 0 AND (SELECT count(*) FROM aud) >= 0;
