-- Broker instances: one row per running process, kept fresh by a heartbeat.

-- name: RegisterInstance :exec
INSERT INTO instances (id, hostname, version, git_sha) VALUES (@id, @hostname, @version, @git_sha)
ON CONFLICT (id) DO NOTHING;

-- name: HeartbeatInstance :one
-- Records that the instance lives, and returns how long it had been silent (the joined row
-- is the one before the update): a silence near INSTANCE_DEAD_AFTER means the others may
-- have declared it dead meanwhile.
UPDATE instances i SET heartbeat_at = now()
FROM instances prev
WHERE i.id = @id AND prev.id = i.id AND i.stopped_at IS NULL
RETURNING extract(epoch FROM now() - prev.heartbeat_at)::float8 AS silent_seconds;

-- name: StopInstance :exec
UPDATE instances SET stopped_at = now(), draining_at = coalesce(draining_at, now()) WHERE id = @id;
