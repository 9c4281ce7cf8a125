-- Hook signals that arrived before their session's presence existed.

-- name: InsertPendingStatus :execrows
-- Keeps a hook signal for 10 s, unless too many are already waiting — a bound on what
-- unmatched hook requests can make the broker store: @max_pending unauthenticated signals in
-- all (@member_id NULL) and @max_ip_pending of one client IP, or @max_member_pending of the
-- token's member, counted apart so that strangers cannot crowd out a member's own signals.
-- 0 rows when refused.
INSERT INTO pending_statuses (pid, cwd, session_id, status, member_id, client_ip)
SELECT @pid, @cwd, sqlc.narg(session_id), @status, sqlc.narg(member_id), @client_ip::text
WHERE (SELECT count(*) FROM (
    SELECT 1 FROM pending_statuses ps
    WHERE ps.created_at >= now() - interval '10 seconds' AND ps.applied_at IS NULL
      AND ps.member_id IS NOT DISTINCT FROM sqlc.narg(member_id)::text
    LIMIT @max_pending::int
) waiting) < CASE WHEN sqlc.narg(member_id)::text IS NULL THEN @max_pending::int ELSE @max_member_pending::int END
AND (sqlc.narg(member_id)::text IS NOT NULL OR (SELECT count(*) FROM (
    SELECT 1 FROM pending_statuses ps
    WHERE ps.created_at >= now() - interval '10 seconds' AND ps.applied_at IS NULL
      AND ps.member_id IS NULL AND ps.client_ip = @client_ip::text
    LIMIT @max_ip_pending::int
) from_ip) < @max_ip_pending::int);

-- name: PurgePendingStatuses :execrows
DELETE FROM pending_statuses WHERE applied_at IS NOT NULL OR created_at < now() - interval '10 seconds';
