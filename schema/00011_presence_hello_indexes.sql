-- Two indexes on presences for the hello.
--
-- New sessions a member opened in the last minute: the hello counts them (at most
-- MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN), a bound on the presence rows one member can make the
-- broker keep for PRESENCE_RETENTION. Takeovers reuse their row and are not counted. Built
-- CONCURRENTLY, outside a transaction, as migration 6's index on the same table.
--
-- A Claude Code session id belongs to the first member that used it while any presence of
-- that member with it is kept (live or ended within PRESENCE_RETENTION): the hello looks
-- presences up by (mesh, session id) whether ended or not, which the live-only index
-- presences_session_id_live_idx cannot serve.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS presences_member_connected_idx;
CREATE INDEX CONCURRENTLY presences_member_connected_idx ON presences (member_id, connected_at);
DROP INDEX CONCURRENTLY IF EXISTS presences_mesh_session_id_idx;
CREATE INDEX CONCURRENTLY presences_mesh_session_id_idx ON presences (mesh_id, session_id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS presences_mesh_session_id_idx;
DROP INDEX CONCURRENTLY IF EXISTS presences_member_connected_idx;
