// Package devdb runs the embedded default database: a PostgreSQL cluster in a local data
// directory, started from the server binaries installed on the machine (initdb, postgres),
// reached over a unix socket in a private directory, and stopped when the broker exits.
//
// It exists so that `broker serve` with no DATABASE_URL works on a laptop or a fresh machine,
// and so the test harness (internal/testdb) can start a real server by itself. It is never
// used in production, where DATABASE_URL names a managed Postgres.
//
// Postgres refuses to run as root, so when the broker is root the cluster runs as the
// unprivileged "postgres" user (or "nobody"), which owns the data directory.
//
// A Cluster is safe for use by one goroutine at a time; Stop may be called more than once.
package devdb
