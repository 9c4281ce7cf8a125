-- Mesh permissions: explicit per-member overrides of the role defaults.

-- name: MeshPermissions :many
-- Every member of the mesh (revoked ones too, marked: a revoked member confers no standing)
-- with its explicit permission row, if any.
SELECT m.id AS member_id, m.display_name, m.role, m.user_id, (m.revoked_at IS NOT NULL)::bool AS revoked,
       p.can_invite, p.can_deploy_mcp, p.can_manage_files, p.can_manage_vault, p.can_manage_watches,
       p.can_manage_webhooks, p.can_write_state, p.can_send, p.can_use_tools, p.can_delete_mesh,
       p.can_manage_permissions
FROM members m LEFT JOIN permissions p ON p.member_id = m.id AND p.mesh_id = m.mesh_id
WHERE m.mesh_id = @mesh_id
ORDER BY m.joined_at, m.id
LIMIT @lim;

-- name: UpsertPermissions :exec
INSERT INTO permissions (id, mesh_id, member_id, can_invite, can_deploy_mcp, can_manage_files,
    can_manage_vault, can_manage_watches, can_manage_webhooks, can_write_state, can_send,
    can_use_tools, can_delete_mesh, can_manage_permissions, updated_at)
VALUES (@id, @mesh_id, @member_id, @can_invite, @can_deploy_mcp, @can_manage_files,
    @can_manage_vault, @can_manage_watches, @can_manage_webhooks, @can_write_state, @can_send,
    @can_use_tools, @can_delete_mesh, @can_manage_permissions, now())
ON CONFLICT (mesh_id, member_id) DO UPDATE SET
    can_invite = EXCLUDED.can_invite, can_deploy_mcp = EXCLUDED.can_deploy_mcp,
    can_manage_files = EXCLUDED.can_manage_files, can_manage_vault = EXCLUDED.can_manage_vault,
    can_manage_watches = EXCLUDED.can_manage_watches, can_manage_webhooks = EXCLUDED.can_manage_webhooks,
    can_write_state = EXCLUDED.can_write_state, can_send = EXCLUDED.can_send,
    can_use_tools = EXCLUDED.can_use_tools, can_delete_mesh = EXCLUDED.can_delete_mesh,
    can_manage_permissions = EXCLUDED.can_manage_permissions, updated_at = now();
