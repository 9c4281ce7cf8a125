// Package schema embeds the goose migrations, so the broker binary carries its own schema.
// sqlc reads the same .sql files as its schema (sqlc.yaml), which keeps one source of truth.
package schema

import "embed"

// Migrations holds every NNNNN_name.sql goose migration in this folder.
//
//go:embed *.sql
var Migrations embed.FS
