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
-- Which of these members are revoked or in an archived mesh (an instance whose LISTEN
-- connection was down checks its sessions' members when it comes back: it may have missed
-- a revoke or archive notification).
SELECT m.id FROM members m JOIN meshes s ON s.id = m.mesh_id
WHERE m.id = ANY(@ids::text[]) AND (m.revoked_at IS NOT NULL OR s.archived_at IS NOT NULL);

-- name: RecentlyRevoked :many
-- Members revoked, or whose mesh was archived, in the last minute (see
-- Hub.closeRevokedMissed).
SELECT id FROM members WHERE revoked_at > now() - interval '1 minute'
UNION
SELECT m.id FROM meshes s JOIN members m ON m.mesh_id = s.id
WHERE s.archived_at > now() - interval '1 minute' AND m.revoked_at IS NULL;

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

-- name: InsertOwnedMember :one
-- A member linked to a user account (mesh creation over /cli).
INSERT INTO members (id, mesh_id, user_id, peer_pubkey, display_name, role)
VALUES (@id, @mesh_id, @user_id, @peer_pubkey, @display_name, @role)
RETURNING *;

-- name: CallerMember :one
-- The user's best standing in a mesh: its unrevoked member there (an admin one first), or
-- none (member_id '') — and whether it owns the mesh.
SELECT coalesce(m.id, '')::text AS member_id, coalesce(m.role, '')::text AS role,
       (s.owner_user_id IS NOT DISTINCT FROM @user_id::text)::bool AS is_owner
FROM meshes s
LEFT JOIN LATERAL (
    SELECT id, role FROM members
    WHERE mesh_id = s.id AND user_id = @user_id AND revoked_at IS NULL
    ORDER BY (role = 'admin') DESC, joined_at, id LIMIT 1
) m ON true
WHERE s.id = @mesh_id;

-- name: MeshMembers :many
-- A mesh's members (revoked ones too) with their live-session counts, oldest first.
SELECT m.*,
       (SELECT count(*) FROM presences p WHERE p.member_id = m.id AND p.ended_at IS NULL AND p.disconnected_at IS NULL)::bigint AS session_count
FROM members m WHERE m.mesh_id = @mesh_id
ORDER BY m.joined_at, m.id
LIMIT @lim;

-- name: MergeGrants :many
-- Merges a patch into the grants of a user's unrevoked members in a mesh: an array sets
-- the sender's entry, null deletes it. Returns the merged maps.
UPDATE members SET peer_grants = jsonb_strip_nulls(peer_grants || @patch::jsonb)
WHERE mesh_id = @mesh_id AND user_id = @user_id AND revoked_at IS NULL
RETURNING id, peer_grants;

-- name: UpdateMemberProfile :one
-- Sets the given fields of a member (NULL leaves a field as it is; role_tag '' clears it).
UPDATE members SET
    display_name   = coalesce(sqlc.narg(display_name), display_name),
    role_tag       = CASE WHEN sqlc.narg(role_tag)::text IS NULL THEN role_tag ELSE NULLIF(sqlc.narg(role_tag)::text, '') END,
    default_groups = coalesce(sqlc.narg(default_groups)::jsonb, default_groups),
    message_mode   = coalesce(sqlc.narg(message_mode), message_mode),
    role           = coalesce(sqlc.narg(role), role)
WHERE id = @id AND mesh_id = @mesh_id AND revoked_at IS NULL
RETURNING *;

-- name: RevokeMemberOf :one
-- RevokeMember, returning what the audit event records.
WITH r AS (
    UPDATE members SET revoked_at = now()
    WHERE id = @id AND mesh_id = @mesh_id AND revoked_at IS NULL
    RETURNING id, display_name
)
SELECT r.id, r.display_name, pg_notify(@channel::text, @payload::text)::text AS notified FROM r;

-- name: PresenceMember :one
-- Which member a presence of a mesh belongs to (it may have ended).
SELECT member_id FROM presences WHERE id = @id AND mesh_id = @mesh_id;
