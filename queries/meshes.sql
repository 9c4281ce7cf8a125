-- Meshes.

-- name: InsertMesh :one
INSERT INTO meshes (id, name, slug, owner_pubkey, owner_secret_key, root_key)
VALUES (@id, @name, @slug, @owner_pubkey, @owner_secret_key, @root_key)
RETURNING *;

-- name: GetMesh :one
SELECT * FROM meshes WHERE id = @id;

-- name: LiveSlugExists :one
SELECT EXISTS (SELECT 1 FROM meshes WHERE slug = @slug AND archived_at IS NULL);
