-- Members: ed25519 identities inside a mesh.

-- name: InsertMember :one
INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role)
VALUES (@id, @mesh_id, @peer_pubkey, @display_name, @role)
RETURNING *;

-- name: RevokeMember :one
-- Revokes a member and, when that commits, tells every instance (@payload, a revoke
-- notification) to close the member's open sockets: revocation takes effect on live
-- sessions at once, not only on the next hello.
WITH r AS (
    UPDATE members SET revoked_at = now()
    WHERE id = @id AND mesh_id = @mesh_id AND revoked_at IS NULL
    RETURNING id
)
SELECT r.id, pg_notify(@channel::text, @payload::text)::text AS notified FROM r;

-- name: RevokedAmong :many
-- Which of these members are revoked (an instance whose LISTEN connection was down checks
-- its sessions' members when it comes back: it may have missed a revoke notification).
SELECT id FROM members WHERE id = ANY(@ids::text[]) AND revoked_at IS NOT NULL;

-- name: RecentlyRevoked :many
-- Members revoked in the last minute (see Hub.closeRevokedMissed).
SELECT id FROM members WHERE revoked_at > now() - interval '1 minute';

-- name: GetMember :one
SELECT * FROM members WHERE id = @id;

-- name: HelloLookup :one
-- Everything a hello reads, in one round trip, once its signature has verified: the mesh's
-- live presences other than the connecting identity (the capacity check; skipped when
-- count_presences is false); the non-revoked member with this pubkey in the non-archived
-- mesh, with what hello_ack reports (its profile, the mesh's policy) and what its last
-- session left (peer_states); and what the session-ownership rules need: who owns the
-- identity's live presence (and whether its key was proven), and whether the session key or the Claude Code session id belong to another member: the
-- first member to use one keeps it while any of its presences with it is kept (live, in its
-- grace window, or ended within PRESENCE_RETENTION), unless that member is revoked.
-- Always one row: member_id is '' when there is no such member, saved_visible NULL when
-- nothing was saved.
SELECT
    CASE WHEN @count_presences::bool THEN (
        SELECT count(*) FROM presences p
        WHERE p.mesh_id = @mesh_id AND p.ended_at IS NULL AND p.identity_key <> k.identity
    ) ELSE 0 END::bigint AS live_presences,
    coalesce(idp.member_id, '')::text AS identity_owner, coalesce(idp.session_proven, false)::bool AS identity_proven,
    EXISTS (SELECT 1 FROM presences p JOIN members o ON o.id = p.member_id AND o.revoked_at IS NULL
            WHERE p.mesh_id = @mesh_id AND p.session_pubkey = NULLIF(@session_pubkey::text, '') AND p.member_id <> m.id)::bool AS session_key_taken,
    EXISTS (SELECT 1 FROM members o
            WHERE o.mesh_id = @mesh_id AND o.peer_pubkey = NULLIF(@session_pubkey::text, '') AND o.id <> m.id)::bool AS session_key_is_member_key,
    EXISTS (SELECT 1 FROM presences p JOIN members o ON o.id = p.member_id AND o.revoked_at IS NULL
            WHERE p.mesh_id = @mesh_id AND p.session_id = @session_id::text AND p.member_id <> m.id)::bool AS session_id_taken,
    coalesce(m.id, '')::text AS member_id, coalesce(m.peer_pubkey, '')::text AS peer_pubkey,
    coalesce(m.display_name, '')::text AS display_name, coalesce(m.role, '')::text AS role, m.role_tag,
    m.default_groups, coalesce(m.message_mode, '')::text AS message_mode, s.self_editable,
    ps.groups AS saved_groups, ps.profile AS saved_profile, ps.visible AS saved_visible,
    ps.last_summary AS saved_summary, ps.last_seen_at AS saved_last_seen_at, ps.cumulative_stats AS saved_stats
FROM (SELECT 1) AS one
LEFT JOIN (members m JOIN meshes s ON s.id = m.mesh_id AND s.archived_at IS NULL)
    ON m.mesh_id = @mesh_id AND m.peer_pubkey = @pubkey AND m.revoked_at IS NULL
LEFT JOIN peer_states ps ON ps.mesh_id = m.mesh_id AND ps.member_id = m.id
CROSS JOIN LATERAL (
    SELECT CASE WHEN @session_pubkey::text <> '' THEN 's:' || @session_pubkey::text
                ELSE 'm:' || coalesce(m.id, '') || ':' || @session_id::text END AS identity
) k
LEFT JOIN presences idp ON idp.mesh_id = @mesh_id AND idp.identity_key = k.identity AND idp.ended_at IS NULL;
