-- Hook signals that arrived before their session's presence existed.

-- name: InsertPendingStatus :exec
INSERT INTO pending_statuses (pid, cwd, session_id, status) VALUES (@pid, @cwd, sqlc.narg(session_id), @status);

-- name: PurgePendingStatuses :execrows
DELETE FROM pending_statuses WHERE applied_at IS NOT NULL OR created_at < now() - interval '10 seconds';
