-- Members: ed25519 identities inside a mesh.

-- name: GetLiveMemberByPubkey :one
-- The hello lookup: a non-revoked member of a non-archived mesh.
SELECT m.id, m.mesh_id, m.peer_pubkey, m.display_name, m.role
FROM members m
JOIN meshes s ON s.id = m.mesh_id
WHERE m.mesh_id = @mesh_id AND m.peer_pubkey = @pubkey
  AND m.revoked_at IS NULL AND s.archived_at IS NULL;

-- name: InsertMember :one
INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role)
VALUES (@id, @mesh_id, @peer_pubkey, @display_name, @role)
RETURNING *;

-- name: RevokeMember :one
UPDATE members SET revoked_at = now()
WHERE id = @id AND mesh_id = @mesh_id AND revoked_at IS NULL
RETURNING id;

-- name: GetMember :one
SELECT * FROM members WHERE id = @id;
