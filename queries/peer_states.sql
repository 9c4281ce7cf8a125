-- What a member's sessions carry across connections.

-- name: SavePeerState :exec
INSERT INTO peer_states (mesh_id, member_id, groups, profile, visible, last_summary, last_display_name, last_seen_at)
VALUES (@mesh_id, @member_id, @groups, @profile, @visible, sqlc.narg(last_summary), sqlc.narg(last_display_name), now())
ON CONFLICT (mesh_id, member_id) DO UPDATE SET
    groups = excluded.groups, profile = excluded.profile, visible = excluded.visible,
    last_summary = coalesce(excluded.last_summary, peer_states.last_summary),
    last_display_name = excluded.last_display_name, last_seen_at = now(), updated_at = now();
