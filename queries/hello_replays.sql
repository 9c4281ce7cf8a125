-- Accepted hello signatures, remembered so a replay is refused on any instance.

-- name: RememberHelloSignature :execrows
-- 1 row: first time seen (or the earlier record had expired); 0 rows: a replay.
INSERT INTO hello_replays (signature, mesh_id, expires_at)
VALUES (@signature, @mesh_id, @expires_at)
ON CONFLICT (signature) DO UPDATE
    SET seen_at = now(), expires_at = excluded.expires_at, mesh_id = excluded.mesh_id
    WHERE hello_replays.expires_at < now();

-- name: PurgeHelloReplays :execrows
DELETE FROM hello_replays WHERE expires_at < now();
