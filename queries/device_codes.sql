-- Device-code login: the CLI starts a code, a signed-in user approves it in the web app, and
-- the CLI's poll collects the bearer once.

-- name: CountLiveDeviceCodes :one
-- Unexpired codes waiting for approval or collection, counted up to @cap (the global cap on
-- open logins; device_codes_expires_idx).
SELECT count(*)::int FROM (
    SELECT 1 FROM device_codes
    WHERE status IN ('pending', 'approved') AND expires_at > now()
    LIMIT @cap::int
) live;

-- name: InsertDeviceCode :execrows
-- 0 rows: a pending code already has this user code (the caller draws another), so the
-- user-code fallback of approval finds one code. Deletes up to 16 codes that expired over
-- an hour ago on the way: each new code removes more old ones than it adds.
WITH purged AS (
    DELETE FROM device_codes WHERE id IN (
        SELECT o.id FROM device_codes o WHERE o.expires_at < now() - interval '1 hour'
        LIMIT 16 FOR UPDATE SKIP LOCKED)
)
INSERT INTO device_codes (id, device_code, user_code, session_id, hostname, platform, arch, ip_address, expires_at)
SELECT @id::text, @device_code::text, @user_code::text, @session_id::text, sqlc.narg(hostname)::text,
       sqlc.narg(platform)::text, sqlc.narg(arch)::text, sqlc.narg(ip_address)::text, @expires_at::timestamptz
WHERE NOT EXISTS (SELECT 1 FROM device_codes WHERE user_code = @user_code::text AND status = 'pending');

-- name: LockDeviceCodeForApproval :one
-- The code to approve, locked until the approving transaction ends (a second approval
-- waits and then sees it approved): by session id, else the newest pending code with this
-- user code.
SELECT id, status, (expires_at <= now())::bool AS expired, hostname, platform, arch
FROM device_codes
WHERE session_id = @code OR (user_code = @user_code AND status = 'pending')
ORDER BY (session_id = @code) DESC, created_at DESC
LIMIT 1
FOR UPDATE;

-- name: ApproveDeviceCode :execrows
-- Holds the minted bearer on the row until the CLI's poll collects it.
UPDATE device_codes
SET status = 'approved', user_id = @user_id, session_token = @session_token, approved_at = now()
WHERE id = @id AND status = 'pending';

-- name: ExpireDeviceCode :exec
UPDATE device_codes SET status = 'expired', session_token = NULL
WHERE id = @id AND status IN ('pending', 'approved');

-- name: ConsumeDeviceCode :one
-- Collects an approved, unexpired code's bearer exactly once: concurrent polls wait on the
-- row lock and then find it consumed. The bearer is cleared from the row as it is handed out.
WITH old AS (
    SELECT d.id, d.session_token FROM device_codes d
    WHERE d.device_code = @device_code AND d.status = 'approved' AND d.expires_at > now()
    FOR UPDATE
)
UPDATE device_codes d SET status = 'consumed', session_token = NULL
FROM old, users u
WHERE d.id = old.id AND d.status = 'approved' AND u.id = d.user_id
RETURNING coalesce(old.session_token, '')::text AS session_token, u.id AS user_id, u.name, u.email;

-- name: PollDeviceCodeStatus :one
-- A code that was not collected: expires it if its time is up (an approved one's bearer is
-- revoked, since nobody collected it) and returns its status. No row: unknown code.
WITH e AS (
    UPDATE device_codes SET status = 'expired', session_token = NULL
    WHERE device_code = @device_code AND status IN ('pending', 'approved') AND expires_at <= now()
    RETURNING id
), r AS (
    UPDATE cli_sessions SET revoked_at = now()
    WHERE device_code_id IN (SELECT id FROM e) AND revoked_at IS NULL
)
SELECT (CASE WHEN EXISTS (SELECT 1 FROM e) THEN 'expired' ELSE d.status END)::text AS status
FROM device_codes d WHERE d.device_code = @device_code;

-- name: ExpireUncollectedDeviceCodes :exec
-- Approved codes whose time ran out before any poll collected them: up to @lim of them lose
-- their bearer (cleared from the row, its token revoked), so a bearer nobody received is
-- neither kept in plain text nor left usable.
WITH e AS (
    UPDATE device_codes SET status = 'expired', session_token = NULL
    WHERE id IN (
        SELECT o.id FROM device_codes o
        WHERE o.status = 'approved' AND o.expires_at <= now()
        LIMIT @lim::int FOR UPDATE SKIP LOCKED)
    RETURNING id
)
UPDATE cli_sessions SET revoked_at = now()
WHERE device_code_id IN (SELECT id FROM e) AND revoked_at IS NULL;

-- name: CountLiveDeviceCodesFrom :one
-- Unexpired codes started from one client address, counted up to @cap (the per-address cap:
-- many codes from one address must not fill the global one; device_codes_expires_idx).
SELECT count(*)::int FROM (
    SELECT 1 FROM device_codes
    WHERE status IN ('pending', 'approved') AND expires_at > now() AND ip_address = @ip::text
    LIMIT @cap::int
) live;
