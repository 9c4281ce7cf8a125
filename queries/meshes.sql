-- Meshes.

-- name: InsertMesh :one
INSERT INTO meshes (id, name, slug, owner_pubkey, owner_secret_key, root_key)
VALUES (@id, @name, @slug, @owner_pubkey, @owner_secret_key, @root_key)
RETURNING *;

-- name: GetMesh :one
SELECT * FROM meshes WHERE id = @id;
