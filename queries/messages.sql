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

-- name: InsertMessages :many
-- Many messages at once; a clientMessageId already stored is skipped (not returned).
INSERT INTO messages (id, mesh_id, sender_member_id, sender_presence_id, sender_session_pubkey,
    target_spec, target_kind, priority, nonce, ciphertext, client_message_id, expires_at)
SELECT unnest(@ids::text[]), unnest(@mesh_ids::text[]), unnest(@sender_member_ids::text[]),
       unnest(@sender_presence_ids::text[]), NULLIF(unnest(@sender_session_pubkeys::text[]), ''),
       unnest(@target_specs::text[]), unnest(@target_kinds::text[]), unnest(@priorities::text[]),
       unnest(@nonces::text[]), unnest(@ciphertexts::text[]), NULLIF(unnest(@client_message_ids::text[]), ''),
       unnest(@expires_ats::timestamptz[])
ON CONFLICT (sender_member_id, client_message_id) WHERE client_message_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: InsertDeliveryRows :exec
-- Many deliveries at once; an empty presence id means "any session of the member".
INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at)
SELECT unnest(@message_ids::text[]), unnest(@mesh_ids::text[]), unnest(@member_ids::text[]),
       NULLIF(unnest(@presence_ids::text[]), ''), unnest(@priorities::text[]), unnest(@expires_ats::timestamptz[]);
