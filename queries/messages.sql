-- Messages and their recipients.

-- name: ResolveDirectTarget :many
-- Who a 64-hex target names in a mesh: a live session key first, then a member key, then
-- an ended session key (a stale key: routed to its member). kind says which.
(SELECT 'session'::text AS kind, p.id AS presence_id, p.member_id, m.peer_grants
 FROM presences p JOIN members m ON m.id = p.member_id
 WHERE p.mesh_id = @mesh_id AND p.session_pubkey = @target AND p.ended_at IS NULL AND m.revoked_at IS NULL
 LIMIT 1)
UNION ALL
(SELECT 'member'::text, ''::text, m.id, m.peer_grants
 FROM members m WHERE m.mesh_id = @mesh_id AND m.peer_pubkey = @target AND m.revoked_at IS NULL
 LIMIT 1)
UNION ALL
(SELECT 'stale'::text, ''::text, p.member_id, m.peer_grants
 FROM presences p JOIN members m ON m.id = p.member_id
 WHERE p.mesh_id = @mesh_id AND p.session_pubkey = @target AND p.ended_at IS NOT NULL AND m.revoked_at IS NULL
 ORDER BY p.ended_at DESC LIMIT 1);

-- name: GetMessageByClientID :one
SELECT id FROM messages WHERE sender_member_id = @sender_member_id AND client_message_id = @client_message_id;

-- name: InsertMessage :execrows
INSERT INTO messages (id, mesh_id, sender_member_id, sender_presence_id, sender_session_pubkey,
    target_spec, target_kind, priority, nonce, ciphertext, client_message_id, expires_at)
VALUES (@id, @mesh_id, @sender_member_id, @sender_presence_id, sqlc.narg(sender_session_pubkey),
    @target_spec, @target_kind, @priority, @nonce, @ciphertext, sqlc.narg(client_message_id), @expires_at)
ON CONFLICT (sender_member_id, client_message_id) WHERE client_message_id IS NOT NULL DO NOTHING;

-- name: InsertDeliveries :exec
-- One row per recipient; an empty presence id means "any session of the member".
INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at)
SELECT @message_id, @mesh_id, unnest(@member_ids::text[]), NULLIF(unnest(@presence_ids::text[]), ''),
       @priority, @expires_at;

-- name: PurgeExpiredMessages :execrows
-- Messages past their TTL go, with their deliveries (ON DELETE CASCADE), a batch at a time.
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages WHERE expires_at < now() ORDER BY expires_at LIMIT 5000
);
