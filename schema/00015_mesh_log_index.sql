-- The per-mesh log's order: a claim reads a mesh's entries after a cursor through it, and
-- it makes a position unique within its mesh. Built CONCURRENTLY, outside a transaction, as
-- migrations 6 and 11, so a deploy does not lock messages while it is built.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS messages_mesh_seq_key;
CREATE UNIQUE INDEX CONCURRENTLY messages_mesh_seq_key ON messages (mesh_id, mesh_seq) WHERE mesh_seq IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS messages_mesh_seq_key;
