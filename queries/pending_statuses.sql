-- Hook signals that arrived before their session's presence existed.

-- name: InsertPendingStatus :execrows
-- Keeps a hook signal for 10 s, unless @max_pending signals are already waiting (a bound on
-- what unmatched hook requests can make the broker store, whoever sends them): 0 rows then.
-- @member_id is the hook token's member (the signal applies only to its presences), or NULL.
INSERT INTO pending_statuses (pid, cwd, session_id, status, member_id)
SELECT @pid, @cwd, sqlc.narg(session_id), @status, sqlc.narg(member_id)
WHERE (SELECT count(*) FROM (
    SELECT 1 FROM pending_statuses ps
    WHERE ps.created_at >= now() - interval '10 seconds' AND ps.applied_at IS NULL
    LIMIT @max_pending::int
) waiting) < @max_pending::int;

-- name: PurgePendingStatuses :execrows
DELETE FROM pending_statuses WHERE applied_at IS NOT NULL OR created_at < now() - interval '10 seconds';
