-- Per-recipient delivery state.

-- name: CountPendingDeliveries :one
-- The broker_queue_depth gauge: deliveries not yet delivered and not expired. Counted in two
-- halves whose predicates are those of the claim's two partial indexes, so each half reads
-- only pending rows; one count over the whole predicate matched neither index and scanned
-- the whole table (135 ms at 670 000 rows, every 30 s on every instance, growing with
-- QUEUE_TTL's worth of history).
SELECT ((SELECT count(*) FROM deliveries d
        WHERE d.recipient_presence_id IS NOT NULL AND d.delivered_at IS NULL AND d.expires_at > now())
     + (SELECT count(*) FROM deliveries d
        WHERE d.recipient_presence_id IS NULL AND d.delivered_at IS NULL AND d.expires_at > now()))::bigint AS pending;

-- name: ClaimDeliveries :many
-- Leases up to @lim deliverable rows for each of several presences — rows addressed to the
-- presence, and rows addressed to its member (any session) — oldest first. Held priorities
-- (next, low) are deliverable only while the presence is idle, read here, so a status set on
-- any instance counts at once. Rows under another claim's live lease are skipped;
-- concurrent claims get disjoint sets; a member row reachable by two of the presences goes
-- to one of them. Each lateral matches one partial index exactly (recipient, id), so the
-- scan stays on the recipient's pending rows however stale the statistics of this busy
-- table are; expiry is checked on the joined rows, not in the index scan. Each presence comes
-- with the epoch of the socket claiming for it: a socket that no longer owns its presence
-- claims nothing, and a lease taken for the presence by an older socket is void.
WITH t AS (
    SELECT unnest(@presence_ids::text[]) AS presence_id, unnest(@member_ids::text[]) AS member_id,
           unnest(@epochs::bigint[]) AS epoch
), tp AS (
    SELECT t.presence_id, t.member_id, t.epoch, p.status FROM t
    JOIN presences p ON p.id = t.presence_id AND p.ended_at IS NULL AND p.connection_epoch = t.epoch
), own AS (
    SELECT x.id, tp.presence_id, tp.epoch FROM tp
    CROSS JOIN LATERAL (
        SELECT d.id FROM deliveries d
        WHERE d.recipient_presence_id = tp.presence_id AND d.delivered_at IS NULL
          AND (d.priority = 'now' OR tp.status = 'idle')
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now()
               OR (d.claimed_by = tp.presence_id AND d.claimed_epoch < tp.epoch))
        ORDER BY d.id
        LIMIT @lim
        FOR UPDATE OF d SKIP LOCKED
    ) x
), shared AS (
    SELECT DISTINCT ON (x.id) x.id, tp.presence_id, tp.epoch FROM tp
    CROSS JOIN LATERAL (
        SELECT d.id FROM deliveries d
        WHERE d.recipient_presence_id IS NULL AND d.recipient_member_id = tp.member_id AND d.delivered_at IS NULL
          AND (d.priority = 'now' OR tp.status = 'idle')
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now()
               OR (d.claimed_by = tp.presence_id AND d.claimed_epoch < tp.epoch))
        ORDER BY d.id
        LIMIT @lim
        FOR UPDATE OF d SKIP LOCKED
    ) x
    ORDER BY x.id
), c AS (
    SELECT own.id, own.presence_id, own.epoch FROM own UNION ALL SELECT shared.id, shared.presence_id, shared.epoch FROM shared
)
UPDATE deliveries d
SET claimed_by = c.presence_id, claimed_epoch = c.epoch,
    lease_expires_at = now() + make_interval(secs => @lease_seconds::float8), attempts = d.attempts + 1
FROM c, messages m
WHERE d.id = c.id AND d.expires_at > now() AND m.id = d.message_id
RETURNING c.presence_id::text AS presence_id, d.id AS delivery_id, m.id AS message_id, m.mesh_id, m.priority,
          m.nonce, m.ciphertext, m.created_at, m.client_message_id, m.target_kind,
          coalesce(m.sender_session_pubkey, m.sender_member_pubkey)::text AS sender_pubkey,
          m.sender_member_pubkey, d.attempts;

-- name: MarkDelivered :execrows
UPDATE deliveries SET delivered_at = now()
WHERE id = ANY(@ids::bigint[]) AND delivered_at IS NULL;

-- name: MarkDeliveredByMessage :execrows
-- A client_ack: the recipient presence acknowledges messages by id.
UPDATE deliveries SET delivered_at = now()
WHERE message_id = ANY(@message_ids::text[]) AND claimed_by = @presence_id AND delivered_at IS NULL;

-- name: ReleaseLeases :execrows
-- A socket of this presence is gone: what it held but did not deliver is claimable again.
UPDATE deliveries SET lease_expires_at = NULL, claimed_by = NULL
WHERE claimed_by = @presence_id AND delivered_at IS NULL
  AND (recipient_presence_id = @presence_id OR (recipient_presence_id IS NULL AND recipient_member_id = @member_id));

-- name: ReroutePresenceDeliveries :execrows
-- A presence ended: direct messages addressed to its session key go to its member (any
-- session may take them); multicast copies for it are dropped (multicast is not queued).
WITH gone AS (
    DELETE FROM deliveries d USING messages m
    WHERE d.recipient_presence_id = @presence_id AND d.delivered_at IS NULL
      AND m.id = d.message_id AND m.target_kind IN ('broadcast', 'group')
    RETURNING d.id
)
UPDATE deliveries d SET recipient_presence_id = NULL, claimed_by = NULL, lease_expires_at = NULL
FROM messages m
WHERE d.recipient_presence_id = @presence_id AND d.delivered_at IS NULL
  AND m.id = d.message_id AND m.target_kind = 'session';

-- name: MessageDeliveryState :one
SELECT m.id, m.mesh_id, m.target_spec, m.target_kind, m.mesh_seq, m.sender_member_id, m.sender_member_pubkey, m.sender_session_pubkey,
       count(d.id) AS recipients, count(d.delivered_at) AS delivered, max(d.delivered_at) AS last_delivered_at
FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id
WHERE m.id = @id
GROUP BY m.id;

-- name: MessageRecipients :many
-- message_status: each recipient of a message and whether its copy was delivered (the
-- first 1001: the reply lists at most 1000 and says when there are more).
SELECT d.delivered_at, coalesce(p.display_name, m.display_name)::text AS name,
       coalesce(p.session_pubkey, m.peer_pubkey)::text AS pubkey
FROM deliveries d
JOIN members m ON m.id = d.recipient_member_id
LEFT JOIN presences p ON p.id = d.recipient_presence_id
WHERE d.message_id = @message_id
ORDER BY d.id
LIMIT 1001;

-- name: RerouteEndedPresenceDeliveries :execrows
-- The periodic counterpart of ReroutePresenceDeliveries, for copies stored for a presence
-- while it was ending (a send resolves its recipients just before storing them): direct
-- copies go to the member, multicast copies are dropped.
WITH ended AS (
    SELECT d.id, m.target_kind FROM deliveries d
    JOIN presences p ON p.id = d.recipient_presence_id
    JOIN messages m ON m.id = d.message_id
    WHERE d.delivered_at IS NULL AND d.recipient_presence_id IS NOT NULL AND p.ended_at IS NOT NULL
    LIMIT 5000
), gone AS (
    DELETE FROM deliveries d USING ended e
    WHERE d.id = e.id AND e.target_kind IN ('broadcast', 'group')
    RETURNING d.id
)
UPDATE deliveries d SET recipient_presence_id = NULL, claimed_by = NULL, lease_expires_at = NULL
FROM ended e
WHERE d.id = e.id AND e.target_kind = 'session';
