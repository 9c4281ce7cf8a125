-- Hook signals that arrived before their session's presence existed.

-- name: InsertPendingStatus :exec
INSERT INTO pending_statuses (pid, cwd, session_id, status) VALUES (@pid, @cwd, sqlc.narg(session_id), @status);

-- name: TakePendingStatus :one
-- The newest unapplied signal for a new presence, no older than 10 s: matched by Claude
-- Code session id when the hello had one, else by (pid, cwd). Marked applied.
UPDATE pending_statuses SET applied_at = now()
WHERE id = (
    SELECT id FROM pending_statuses
    WHERE applied_at IS NULL AND created_at >= now() - interval '10 seconds'
      AND ((session_id IS NOT NULL AND session_id = @hello_session_id::text) OR (pid = @hello_pid::int AND cwd = @hello_cwd::text))
    ORDER BY created_at DESC, id DESC
    LIMIT 1
)
RETURNING status;

-- name: PurgePendingStatuses :execrows
DELETE FROM pending_statuses WHERE applied_at IS NOT NULL OR created_at < now() - interval '10 seconds';
