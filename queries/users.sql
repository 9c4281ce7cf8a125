-- Accounts of the web side.

-- name: UpsertUser :exec
-- The web app (or a /cli-sync token it signed) vouches for a user: create or update the row.
-- The email is left unset when another user already has it (emails are unique).
INSERT INTO users (id, email, name)
SELECT @id::text,
       CASE WHEN EXISTS (SELECT 1 FROM users o WHERE lower(o.email) = lower(@email::text) AND o.id <> @id::text)
            THEN NULL ELSE @email::text END,
       sqlc.narg(name)::text
ON CONFLICT (id) DO UPDATE
    SET email = coalesce(excluded.email, users.email), name = coalesce(excluded.name, users.name);

-- name: InsertUser :one
INSERT INTO users (id, email, name) VALUES (@id, @email, sqlc.narg(name))
RETURNING id, email, name, created_at;

-- name: ListUsers :many
SELECT id, email, name, created_at FROM users ORDER BY created_at, id;
