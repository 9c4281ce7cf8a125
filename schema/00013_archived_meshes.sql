-- Archived meshes, found by when they were archived: an instance whose LISTEN connection
-- was down checks the meshes archived in the last minute (it may have missed the
-- notification that closes their sockets), and the grace job ends presences of meshes
-- archived in the last hour at once. Few meshes are ever archived, so the partial index
-- stays tiny.

-- +goose Up
CREATE INDEX meshes_archived_at_idx ON meshes (archived_at) WHERE archived_at IS NOT NULL;

-- +goose Down
DROP INDEX meshes_archived_at_idx;
