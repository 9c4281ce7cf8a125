-- New sessions a member opened in the last minute: the hello counts them (at most
-- MAX_NEW_SESSIONS_PER_MEMBER_PER_MIN), a bound on the presence rows one member can make the
-- broker keep for PRESENCE_RETENTION. Takeovers reuse their row and are not counted. Built
-- CONCURRENTLY, outside a transaction, as migration 6's index on the same table.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS presences_member_connected_idx;
CREATE INDEX CONCURRENTLY presences_member_connected_idx ON presences (member_id, connected_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS presences_member_connected_idx;
