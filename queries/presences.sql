-- Presences: one per live session identity.

-- name: TakeOverPresence :one
-- A hello for an identity that already has a live presence takes the row over: new socket,
-- new instance, epoch bumped (which fences the old socket and voids its leases: see
-- ClaimDeliveries), grace window cleared; in the same statement the takeover is enqueued
-- for the audit chain (session_replaced). Only the member that owns the presence may take
-- it over, and a presence whose session key was proven only by a hello that proves it again
-- (@proven): otherwise no row, and nothing changes.
WITH t AS (
    UPDATE presences p SET
        instance_id = @instance_id, connection_epoch = p.connection_epoch + 1,
        session_id = @session_id, session_pubkey = sqlc.narg(session_pubkey), display_name = sqlc.narg(display_name),
        pid = @pid, cwd = @cwd, hostname = sqlc.narg(hostname), peer_type = sqlc.narg(peer_type),
        channel = sqlc.narg(channel), model = sqlc.narg(model), capabilities = @capabilities,
        protocol_version = sqlc.narg(protocol_version), last_seen_at = now(), disconnected_at = NULL,
        session_proven = p.session_proven OR @proven::bool
    WHERE p.mesh_id = @mesh_id::text AND p.identity_key = @identity_key::text AND p.ended_at IS NULL
      AND p.member_id = @member_id::text AND (NOT p.session_proven OR @proven::bool)
    RETURNING p.id, p.connection_epoch, p.groups, p.visible, p.profile, p.summary, p.status, p.connected_at
), audited AS (
    INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
    SELECT @mesh_id::text, 'session_replaced', @member_id::text, NULLIF(@actor_name::text, ''),
           jsonb_build_object('pubkey', @member_pubkey::text, 'presenceId', t.id), @audit_at::timestamptz
    FROM t
)
SELECT id, connection_epoch, groups, visible, profile, summary, status, connected_at FROM t;

-- name: InsertPresence :one
-- A hello's new presence, in one statement, when there is room: the capacity counts (run
-- after LockMeshPresences, in a later statement of the same transaction, so their snapshot
-- sees every presence committed before the lock) — the mesh's live presences
-- (@max_presences), the member's live presences (@max_member_sessions) and the sessions the
-- member opened in the last minute (@max_new_per_minute); a limit <= 0 is no limit — and
-- that no other (non-revoked) member holds the Claude Code session id (sid_ok: checked here
-- again, under the lock, as HelloLookup did before it) — then a
-- hook status that arrived before the presence existed (the first-turn race: the newest
-- unapplied one no older than 10 s, matched by Claude Code session id, else by (pid, cwd),
-- taken as a hook status; one sent with a hook token only for that token's member), the row,
-- and its peer_joined audit event. Always one row: mesh_ok, member_ok, rate_ok and sid_ok
-- say what refused it; id is '' when nothing was written.
WITH room AS (
    SELECT @max_presences::bigint <= 0 OR count(*) < @max_presences::bigint AS mesh_ok,
           @max_member_sessions::bigint <= 0
               OR count(*) FILTER (WHERE p.member_id = @member_id::text) < @max_member_sessions::bigint AS member_ok
    FROM presences p WHERE p.mesh_id = @mesh_id::text AND p.ended_at IS NULL AND p.identity_key <> @identity_key::text
), recent AS (
    SELECT @max_new_per_minute::bigint <= 0 OR count(*) < @max_new_per_minute::bigint AS rate_ok
    FROM presences p WHERE p.member_id = @member_id::text AND p.connected_at > now() - interval '1 minute'
), sid AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM presences p JOIN members o ON o.id = p.member_id AND o.revoked_at IS NULL
        WHERE p.mesh_id = @mesh_id::text AND p.session_id = @session_id::text AND p.member_id <> @member_id::text
    ) AS sid_ok
), allowed AS (
    SELECT room.mesh_ok AND room.member_ok AND recent.rate_ok AND sid.sid_ok AS ok FROM room, recent, sid
), pending AS (
    UPDATE pending_statuses SET applied_at = now()
    WHERE id = (
        SELECT ps.id FROM pending_statuses ps
        WHERE ps.applied_at IS NULL AND ps.created_at >= now() - interval '10 seconds'
          AND ((ps.session_id IS NOT NULL AND ps.session_id = @session_id::text) OR (ps.pid = @pid::int AND ps.cwd = @cwd::text))
          AND (ps.member_id IS NULL OR ps.member_id = @member_id::text)
        ORDER BY ps.created_at DESC, ps.id DESC
        LIMIT 1
    ) AND applied_at IS NULL AND (SELECT ok FROM allowed)
    RETURNING status
), ins AS (
    INSERT INTO presences (
        id, mesh_id, member_id, identity_key, session_id, session_pubkey, session_proven, display_name, pid, cwd,
        hostname, peer_type, channel, model, capabilities, protocol_version, instance_id, groups,
        visible, profile, status, status_source, log_epoch, log_start, log_acked)
    SELECT
        @id::text, @mesh_id::text, @member_id::text, @identity_key::text, @session_id::text, sqlc.narg(session_pubkey)::text,
        @proven::bool, sqlc.narg(display_name)::text,
        @pid::int, @cwd::text, sqlc.narg(hostname)::text, sqlc.narg(peer_type)::text, sqlc.narg(channel)::text, sqlc.narg(model)::text,
        @capabilities::text[], sqlc.narg(protocol_version)::int, sqlc.narg(instance_id)::text, @groups::jsonb, @visible::bool, @profile::jsonb,
        coalesce((SELECT status FROM pending), 'idle'),
        CASE WHEN EXISTS (SELECT 1 FROM pending) THEN 'hook' ELSE 'jsonl' END,
        lg.epoch, coalesce(lg.head, 0), coalesce(lg.head, 0)
    FROM (SELECT 1) one LEFT JOIN mesh_logs lg ON lg.mesh_id = @mesh_id::text
    WHERE (SELECT ok FROM allowed)
    RETURNING id, connection_epoch, connected_at, status
), audited AS (
    INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
    SELECT @mesh_id::text, 'peer_joined', @member_id::text, NULLIF(@actor_name::text, ''), @audit_payload::jsonb, @audit_at::timestamptz
    FROM ins
)
SELECT room.mesh_ok::bool AS mesh_ok, room.member_ok::bool AS member_ok, recent.rate_ok::bool AS rate_ok,
       sid.sid_ok::bool AS sid_ok,
       coalesce(ins.id, '')::text AS id, coalesce(ins.connection_epoch, 0)::bigint AS connection_epoch,
       coalesce(ins.connected_at, now())::timestamptz AS connected_at, coalesce(ins.status, '')::text AS status
FROM room CROSS JOIN recent CROSS JOIN sid LEFT JOIN ins ON true;

-- name: EndPresence :one
-- Ends a presence if this socket (epoch) still owns it.
UPDATE presences SET ended_at = now(), end_reason = @reason
WHERE id = @id AND connection_epoch = @epoch AND ended_at IS NULL
RETURNING id, mesh_id, member_id, session_pubkey, display_name, groups, visible, profile, summary, stats;

-- name: DisconnectPresence :one
-- The socket dropped: the presence stays for the grace window, and what the socket held but
-- did not deliver is claimable again. Both only while this socket (epoch) still owns the
-- presence: a reconnect that already took it over may hold leases of its own by now, and
-- releasing those would deliver its messages twice. Returns 1, or 0 when taken over.
WITH p AS (
    UPDATE presences pr SET disconnected_at = now(), instance_id = NULL
    WHERE pr.id = @id AND pr.connection_epoch = @epoch AND pr.ended_at IS NULL
    RETURNING pr.id, pr.member_id
), released AS (
    UPDATE deliveries d SET lease_expires_at = NULL, claimed_by = NULL
    FROM p
    WHERE d.claimed_by = p.id AND d.delivered_at IS NULL
      AND (d.recipient_presence_id = p.id OR (d.recipient_presence_id IS NULL AND d.recipient_member_id = p.member_id))
)
SELECT count(*) FROM p;

-- name: TouchPresence :exec
UPDATE presences SET last_seen_at = now()
WHERE id = @id AND connection_epoch = @epoch AND ended_at IS NULL;

-- name: ListLivePeers :many
-- list_peers: the mesh's live presences on every instance, oldest first.
SELECT p.id, p.session_pubkey, p.display_name, p.status, p.summary, p.groups, p.session_id,
       p.connected_at, p.cwd, p.hostname, p.peer_type, p.channel, p.model, p.stats, p.visible,
       p.profile, p.member_id, m.peer_pubkey AS member_pubkey, m.display_name AS member_display_name
FROM presences p JOIN members m ON m.id = p.member_id
WHERE p.mesh_id = @mesh_id AND p.ended_at IS NULL
ORDER BY p.connected_at, p.id;

-- name: SetPresenceSummary :exec
UPDATE presences SET summary = @summary WHERE id = @id AND ended_at IS NULL;

-- name: SetPresenceVisible :exec
UPDATE presences SET visible = @visible WHERE id = @id AND ended_at IS NULL;

-- name: SetPresenceGroups :exec
UPDATE presences SET groups = @groups WHERE id = @id AND ended_at IS NULL;

-- name: GetPresenceGroups :one
SELECT groups FROM presences WHERE id = @id;

-- name: ExpiredGracePresences :many
-- Presences whose socket has been gone longer than the grace window, and those of revoked
-- members and of meshes archived in the last hour at once (no socket will take them back:
-- the next hello is refused). Three branches, each on its own index: an OR across them read
-- every presence in its grace window and every member, every 5 s.
(SELECT p.id, p.connection_epoch,
        (EXISTS (SELECT 1 FROM members m WHERE m.id = p.member_id AND m.revoked_at IS NOT NULL)
         OR EXISTS (SELECT 1 FROM meshes s WHERE s.id = p.mesh_id AND s.archived_at IS NOT NULL))::bool AS revoked
 FROM presences p
 WHERE p.disconnected_at IS NOT NULL AND p.ended_at IS NULL
   AND p.disconnected_at < now() - make_interval(secs => @grace_seconds::float8)
 ORDER BY p.disconnected_at
 LIMIT 200)
UNION ALL
(SELECT p.id, p.connection_epoch, true AS revoked
 FROM members m JOIN presences p ON p.member_id = m.id
 WHERE m.revoked_at IS NOT NULL AND p.ended_at IS NULL AND p.disconnected_at IS NOT NULL
   AND p.disconnected_at >= now() - make_interval(secs => @grace_seconds::float8)
 LIMIT 200)
UNION ALL
(SELECT p.id, p.connection_epoch, true AS revoked
 FROM meshes s JOIN presences p ON p.mesh_id = s.id
 WHERE s.archived_at > now() - interval '1 hour' AND p.ended_at IS NULL AND p.disconnected_at IS NOT NULL
   AND p.disconnected_at >= now() - make_interval(secs => @grace_seconds::float8)
 LIMIT 200);

-- name: DisconnectPresencesOfDeadInstances :execrows
-- Sockets held by an instance that stopped or stopped heartbeating are gone: their
-- presences enter the grace window.
UPDATE presences p SET disconnected_at = now(), instance_id = NULL
FROM instances i
WHERE p.instance_id = i.id AND p.ended_at IS NULL AND p.disconnected_at IS NULL
  AND (i.stopped_at IS NOT NULL OR i.heartbeat_at < now() - make_interval(secs => @dead_after_seconds::float8));

-- name: WriteStatus :one
-- The status rules (reference §4.1), atomically: a different status always wins; the same
-- status keeps or upgrades its source by rank (hook 3 > manual 2 > jsonl 1); a lower-ranked
-- source only bumps the time while the recorded source is fresh, else takes over.
WITH old AS (
    SELECT p.id, p.status AS old_status FROM presences p WHERE p.id = @id AND p.ended_at IS NULL FOR UPDATE
)
UPDATE presences p SET
    status_source = CASE
        WHEN p.status <> @status::text THEN @source::text
        WHEN (CASE @source::text WHEN 'hook' THEN 3 WHEN 'manual' THEN 2 ELSE 1 END)
           >= (CASE p.status_source WHEN 'hook' THEN 3 WHEN 'manual' THEN 2 ELSE 1 END) THEN @source::text
        WHEN p.status_updated_at > now() - make_interval(secs => @fresh_seconds::float8) THEN p.status_source
        ELSE @source::text END,
    status = @status::text,
    status_updated_at = now()
FROM old
WHERE p.id = old.id
RETURNING p.status, p.status_source, old.old_status::text AS old_status;

-- name: HookTargets :many
-- Live presences a hook signal is for: those whose hello named this Claude Code session
-- id; else those with this (pid, cwd); else the most recently connected one with this cwd
-- in each mesh. With @member_id (a hook token's member) only that member's presences.
WITH by_session AS (
    SELECT p1.id, p1.status, p1.connection_epoch FROM presences p1
    WHERE @hook_session_id::text <> '' AND p1.session_id = @hook_session_id::text AND p1.ended_at IS NULL
      AND (@member_id::text = '' OR p1.member_id = @member_id::text)
), by_pid AS (
    SELECT p2.id, p2.status, p2.connection_epoch FROM presences p2
    WHERE NOT EXISTS (SELECT 1 FROM by_session) AND p2.cwd = @hook_cwd::text AND p2.pid = @hook_pid::int
      AND p2.ended_at IS NULL AND (@member_id::text = '' OR p2.member_id = @member_id::text)
), by_cwd AS (
    SELECT DISTINCT ON (p3.mesh_id) p3.id, p3.status, p3.connection_epoch FROM presences p3
    WHERE NOT EXISTS (SELECT 1 FROM by_session) AND NOT EXISTS (SELECT 1 FROM by_pid)
      AND p3.cwd = @hook_cwd::text AND p3.ended_at IS NULL
      AND (@member_id::text = '' OR p3.member_id = @member_id::text)
    ORDER BY p3.mesh_id, p3.connected_at DESC
)
SELECT by_session.id, by_session.status, by_session.connection_epoch FROM by_session
UNION ALL SELECT by_pid.id, by_pid.status, by_pid.connection_epoch FROM by_pid
UNION ALL SELECT by_cwd.id, by_cwd.status, by_cwd.connection_epoch FROM by_cwd;

-- name: SweepWorkingToIdle :many
-- The status TTL sweep: working for longer than the TTL becomes idle (source jsonl, so a
-- fresh hook can reclaim it at once). dnd is never swept.
UPDATE presences SET status = 'idle', status_source = 'jsonl', status_updated_at = now()
WHERE status = 'working' AND ended_at IS NULL
  AND status_updated_at < now() - make_interval(secs => @ttl_seconds::float8)
RETURNING id;

-- name: TryJobLock :one
SELECT pg_try_advisory_xact_lock(@lock_key::bigint);

-- name: ClaimJobPeriod :one
-- True when this caller may run job @name now: no run in the last @period_seconds.
INSERT INTO job_runs AS j (name, last_run_at) VALUES (@name, now())
ON CONFLICT (name) DO UPDATE SET last_run_at = now()
WHERE j.last_run_at <= now() - make_interval(secs => @period_seconds::float8)
RETURNING true;

-- name: MergePresenceProfile :exec
UPDATE presences SET profile = profile || @patch::jsonb WHERE id = @id AND ended_at IS NULL;

-- name: SetPresenceStats :exec
UPDATE presences SET stats = @stats::jsonb WHERE id = @id AND ended_at IS NULL;

-- name: LockMeshPresences :exec
-- Serialises new presences of one mesh, so the capacity check and the insert are atomic.
SELECT pg_advisory_xact_lock(hashtextextended('presences:' || @mesh_id::text, 0));

-- name: PurgeEndedPresences :execrows
-- Presences ended longer ago than the retention go, oldest first, a batch at a time. Their
-- session keys stop routing to their member; undelivered copies addressed to them were
-- rerouted or dropped when they ended (ReroutePresenceDeliveries and its periodic
-- counterpart), so nothing pending points at them.
DELETE FROM presences WHERE id IN (
    SELECT p.id FROM presences p
    WHERE p.ended_at < now() - make_interval(secs => @retention_seconds::float8)
    ORDER BY p.ended_at LIMIT 5000
);

-- name: LivePresence :one
-- A presence of the mesh that has not ended (live, or in its grace window).
SELECT id, member_id, connection_epoch, disconnected_at FROM presences
WHERE id = @id AND mesh_id = @mesh_id AND ended_at IS NULL;

-- name: KickedAmong :many
-- Which of these presences were ended by a kick (an instance whose LISTEN connection was
-- down checks the presences it holds: it may have missed the kick notification).
SELECT id FROM presences WHERE id = ANY(@ids::text[]) AND ended_at IS NOT NULL AND end_reason = 'kicked';

-- name: ReattachPresences :execrows
-- An instance whose heartbeat was late takes back the presences of its live sockets that
-- another instance moved into their grace window meanwhile (same epoch: not taken over).
UPDATE presences p SET disconnected_at = NULL, instance_id = @instance_id::text
FROM (SELECT unnest(@ids::text[]) AS id, unnest(@epochs::bigint[]) AS epoch) AS l
WHERE p.id = l.id AND p.connection_epoch = l.epoch AND p.ended_at IS NULL AND p.disconnected_at IS NOT NULL;
