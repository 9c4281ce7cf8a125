package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/app"
	"github.com/meshbroker/meshbroker/internal/config"
	"github.com/meshbroker/meshbroker/internal/migrate"
)

const adminUsage = `broker admin mesh create --name NAME
broker admin member add --mesh MESH_ID --pubkey HEX --name NAME [--role member|admin]
broker admin member revoke --mesh MESH_ID --member MEMBER_ID`

// adminCmd provisions meshes and members; results are JSON on stdout.
func adminCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		return usageError{"admin needs a subcommand:\n" + adminUsage}
	}
	what := args[0] + " " + args[1]
	fs := flag.NewFlagSet("broker admin "+what, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "")
	mesh := fs.String("mesh", "", "")
	pubkey := fs.String("pubkey", "", "")
	role := fs.String("role", "member", "")
	member := fs.String("member", "", "")
	if err := fs.Parse(args[2:]); err != nil {
		return usageError{fmt.Sprintf("admin %s: %v\n%s", what, err, adminUsage)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("admin %s: unexpected argument %q", what, fs.Arg(0))}
	}
	var run func(ctx context.Context, q *db.Queries) (any, error)
	switch what {
	case "mesh create":
		run = func(ctx context.Context, q *db.Queries) (any, error) { return admin.CreateMesh(ctx, q, *name) }
	case "member add":
		run = func(ctx context.Context, q *db.Queries) (any, error) {
			return admin.AddMember(ctx, q, *mesh, *pubkey, *name, *role)
		}
	case "member revoke":
		run = func(ctx context.Context, q *db.Queries) (any, error) {
			return admin.RevokeMember(ctx, q, *mesh, *member)
		}
	default:
		return usageError{fmt.Sprintf("unknown admin subcommand %q:\n%s", what, adminUsage)}
	}
	return withQueries(stderr, func(ctx context.Context, q *db.Queries) error {
		res, err := run(ctx, q)
		var ie *admin.InputError
		if errors.As(err, &ie) {
			return inputError{ie.Msg}
		}
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(res)
	})
}

// withQueries opens the configured database for an operator command: the embedded cluster
// (attached to if a broker runs on it, else started and migrated) or DATABASE_URL, which
// must already be migrated.
func withQueries(stderr io.Writer, fn func(ctx context.Context, q *db.Queries) error) error {
	return withPool(stderr, func(ctx context.Context, pool *pgxpool.Pool) error { return fn(ctx, db.New(pool)) })
}

// withPool is withQueries for commands that need the pool itself.
func withPool(stderr io.Writer, fn func(ctx context.Context, pool *pgxpool.Pool) error) error {
	cfg, log, err := loadConfig(stderr)
	if err != nil {
		return err
	}
	// Operator commands log only warnings: their output is the JSON on stdout.
	if cfg.LogLevel == "info" || cfg.LogLevel == "debug" {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dbase, closeDB, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeDB()
	pool, err := app.NewPool(ctx, dbase.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := ensureMigrated(ctx, cfg, pool, log); err != nil {
		return err
	}
	return fn(ctx, pool)
}

func ensureMigrated(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, log *slog.Logger) error {
	m, err := migrate.FromPool(pool, log)
	if err != nil {
		return err
	}
	defer m.Close()
	if cfg.Embedded() {
		_, err := m.Up(ctx)
		return err
	}
	v, err := m.Version(ctx)
	if err != nil {
		return err
	}
	if latest := migrate.LatestVersion(); v < latest {
		return fmt.Errorf("database schema is at version %d, this broker needs %d: run `broker migrate up` first", v, latest)
	}
	return nil
}

// openDatabase opens the configured database for a command (the embedded cluster, started or
// attached to, or DATABASE_URL); the returned func stops a cluster the command started.
func openDatabase(ctx context.Context, cfg config.Config, log *slog.Logger) (*app.Database, func(), error) {
	dbase, err := app.OpenDatabase(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return dbase, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = dbase.Close(sctx)
	}, nil
}
