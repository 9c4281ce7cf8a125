-- Direct messages are addressed by session key: resolving one must not scan presences.
-- Ended presences are included, because a stale session key routes to its member.

-- +goose Up
CREATE INDEX presences_session_pubkey_idx ON presences (mesh_id, session_pubkey) WHERE session_pubkey IS NOT NULL;

-- +goose Down
DROP INDEX presences_session_pubkey_idx;
