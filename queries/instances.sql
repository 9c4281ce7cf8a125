-- Broker instances: one row per running process, kept fresh by a heartbeat.

-- name: RegisterInstance :exec
INSERT INTO instances (id, hostname, version, git_sha) VALUES (@id, @hostname, @version, @git_sha)
ON CONFLICT (id) DO NOTHING;

-- name: HeartbeatInstance :exec
UPDATE instances SET heartbeat_at = now() WHERE id = @id AND stopped_at IS NULL;

-- name: StopInstance :exec
UPDATE instances SET stopped_at = now(), draining_at = coalesce(draining_at, now()) WHERE id = @id;
