-- Presences: one per live session identity.

-- name: CountLivePresences :one
-- The hello capacity check, across every instance (grace-window presences included).
SELECT count(*) FROM presences WHERE mesh_id = @mesh_id AND ended_at IS NULL;
