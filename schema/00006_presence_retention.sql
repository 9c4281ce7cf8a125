-- Ended presences are purged after PRESENCE_RETENTION.
--
-- A presence row outlives its session on purpose: a direct message to a stale session key
-- still routes to the key's member. But every new session identity, and every reconnect after
-- the grace window, adds a row, so without a purge the table grows for ever. The minute purge
-- job deletes rows ended longer ago than the retention, oldest first, through this index
-- (its predicate names its leading column, like the others on this table: see migration 4).
-- Built CONCURRENTLY, outside a transaction, so the deploy that adds it does not block hellos
-- on a large table.

-- +goose NO TRANSACTION
-- +goose Up
-- A build that failed half-way leaves an invalid index behind; drop it so a re-run builds it.
DROP INDEX CONCURRENTLY IF EXISTS presences_ended_idx;
CREATE INDEX CONCURRENTLY presences_ended_idx ON presences (ended_at) WHERE ended_at IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS presences_ended_idx;
