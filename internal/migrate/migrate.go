// Package migrate applies the embedded goose migrations (schema/) and reports the applied
// version. Every operation that changes the schema holds goose's Postgres session advisory
// lock, so several machines running `broker migrate up` at once apply each migration once.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/meshbroker/meshbroker/schema"
)

// Migrator runs goose against one database.
type Migrator struct {
	db       *sql.DB
	provider *goose.Provider
	ownsDB   bool
}

// Result is one applied (or reverted) migration.
type Result = goose.MigrationResult

// Status is the state of one migration.
type Status = goose.MigrationStatus

// Open connects to databaseURL for migrating; Close releases the connection.
func Open(databaseURL string, log *slog.Logger) (*Migrator, error) {
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	m, err := newMigrator(db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	m.ownsDB = true
	return m, nil
}

// FromPool builds a Migrator on an existing pool (readiness checks use it). Close it before
// closing the pool: database/sql keeps idle connections acquired from the pool, and
// pgxpool.Close waits for every acquired connection.
func FromPool(pool *pgxpool.Pool, log *slog.Logger) (*Migrator, error) {
	db := stdlib.OpenDBFromPool(pool)
	m, err := newMigrator(db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	m.ownsDB = true
	return m, nil
}

func newMigrator(db *sql.DB, log *slog.Logger) (*Migrator, error) {
	// Retry the lock every second for up to 5 minutes: a second machine starting at the same
	// moment waits for the first to finish, then finds nothing left to apply.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration locker: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithSessionLocker(locker)}
	if log != nil {
		opts = append(opts, goose.WithSlog(log.With("subsystem", "migrate")))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, schema.Migrations, opts...)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return &Migrator{db: db, provider: p}, nil
}

// Close releases the Migrator's database handle (never the pool it was built on).
func (m *Migrator) Close() error {
	if m.ownsDB {
		return m.db.Close()
	}
	return nil
}

// Up applies every pending migration.
func (m *Migrator) Up(ctx context.Context) ([]*Result, error) {
	res, err := m.provider.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("migrate up: %w", err)
	}
	return res, nil
}

// DownTo reverts migrations until the applied version is version (0 = empty schema).
func (m *Migrator) DownTo(ctx context.Context, version int64) ([]*Result, error) {
	if version < 0 {
		return nil, fmt.Errorf("migrate down-to: version %d is negative", version)
	}
	res, err := m.provider.DownTo(ctx, version)
	if err != nil {
		return res, fmt.Errorf("migrate down-to %d: %w", version, err)
	}
	return res, nil
}

// Status lists every known migration with whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]*Status, error) {
	st, err := m.provider.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	return st, nil
}

// Version returns the highest applied goose version; 0 on a database never migrated. It
// does not wait for the migration lock, so readiness probes never queue behind a migration.
func (m *Migrator) Version(ctx context.Context) (int64, error) {
	current, _, err := m.provider.GetVersions(ctx)
	if err != nil {
		return 0, fmt.Errorf("read migration version: %w", err)
	}
	return max(current, 0), nil
}

// Latest returns the newest migration version this binary carries.
func (m *Migrator) Latest() int64 { return LatestVersion() }

// LatestVersion returns the newest migration version embedded in the binary, read from the
// migration file names (NNNNN_name.sql).
func LatestVersion() int64 {
	entries, err := fs.Glob(schema.Migrations, "*.sql")
	if err != nil {
		panic("migrate: embedded migrations unreadable: " + err.Error())
	}
	var latest int64
	for _, name := range entries {
		v, err := goose.NumericComponent(name)
		if err != nil {
			panic("migrate: embedded migration " + name + " has no version: " + err.Error())
		}
		latest = max(latest, v)
	}
	return latest
}
