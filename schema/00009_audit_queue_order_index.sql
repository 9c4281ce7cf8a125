-- The chainer reads a mesh's pending events in (audit_xid, id) order (migration 8): an index
-- in that order, so a round reads its batch instead of sorting the mesh's whole backlog. It
-- replaces (mesh_id, id), whose uses (the sweep's loose scan over meshes, the backlog probe)
-- need only the leading column. Built CONCURRENTLY, outside a transaction; a half-built index
-- from a failed run is dropped first.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS audit_pending_mesh_xid_idx;
CREATE INDEX CONCURRENTLY audit_pending_mesh_xid_idx ON audit_pending (mesh_id, audit_xid, id);
DROP INDEX CONCURRENTLY IF EXISTS audit_pending_mesh_idx;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS audit_pending_mesh_idx;
CREATE INDEX CONCURRENTLY audit_pending_mesh_idx ON audit_pending (mesh_id, id);
DROP INDEX CONCURRENTLY IF EXISTS audit_pending_mesh_xid_idx;
