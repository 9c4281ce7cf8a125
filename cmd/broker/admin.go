package main

import (
	"context"
	"encoding/json"
	"errors"
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

// adminCommands provisions meshes and members; each prints its result as one JSON line on
// stdout. A new admin subcommand is one more entry here.
func adminCommands() *command {
	meshFlag := flagDef{name: "mesh", value: "ID", meaning: "the mesh's id, as admin mesh create printed it", required: true}
	return &command{name: "admin", summary: "provision users, tokens, meshes, members and invites (a JSON line on stdout)",
		subs: append([]*command{
			{name: "mesh", summary: "provision meshes", subs: []*command{
				{name: "create", summary: `create a mesh → {"meshId","slug"}`,
					about: `Create a mesh with a fresh invite-signing keypair and root key, and print {"meshId","slug"}. ` +
						"The slug is the name's (lower case, runs of other characters as one dash), suffixed -2, -3 … " +
						"when a live mesh already has it.",
					flags: []flagDef{
						{name: "name", value: "NAME", meaning: "the mesh's name, up to 200 characters", required: true},
					},
					run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
						return admin.CreateMesh(ctx, q, c.flag("name"))
					})},
				{name: "list", summary: `list meshes → {"meshes":[…]}`,
					about: `Print {"meshes":[{meshId, name, slug, ownerUserId, createdAt, archivedAt, memberCount, activePeers}]}, ` +
						"newest first, at most 1000; activePeers counts live sessions on every instance.",
					flags: []flagDef{
						{name: "archived", value: "0|1", meaning: "1 = include archived meshes", def: "0"},
					},
					run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
						if a := c.flag("archived"); a != "0" && a != "1" {
							return nil, &admin.InputError{Msg: "--archived must be 0 or 1"}
						}
						return admin.ListMeshes(ctx, q, c.flag("archived") == "1")
					})},
				{name: "archive", summary: `archive a mesh → {"meshId","slug","archived":true}`,
					about: "Archive a mesh: joins, listings and hellos stop seeing it, its slug is free again, and its open " +
						"sockets are closed (4002 mesh_deleted, on every instance). Recorded as mesh_deleted in its audit chain.",
					args: []argDef{{"ID", "the mesh's id"}},
					run: adminPoolRun(func(ctx context.Context, pool *pgxpool.Pool, c *call) (any, error) {
						return admin.ArchiveMesh(ctx, pool, c.args[0], "")
					})},
			}},
			{name: "member", summary: "provision members", subs: []*command{
				{name: "add", summary: `add a member (an ed25519 public key) to a mesh → {"memberId"}`,
					about: `Add a member identity, an ed25519 public key, to a mesh that is not archived, and ` +
						`print {"memberId"}. A mesh has at most one unrevoked member per key.`,
					flags: []flagDef{
						meshFlag,
						{name: "pubkey", value: "HEX", meaning: "the member's ed25519 public key, 64 hex characters", required: true},
						{name: "name", value: "NAME", meaning: "the member's display name", required: true},
						{name: "role", value: "member|admin", meaning: "the member's role", def: "member"},
					},
					run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
						return admin.AddMember(ctx, q, c.flag("mesh"), c.flag("pubkey"), c.flag("name"), c.flag("role"))
					})},
				{name: "list", summary: `list a mesh's members → {"members":[…]}`,
					about: `Print {"members":[{memberId, displayName, pubkey, role, userId, joinedAt, revokedAt, sessions}]}, ` +
						"oldest first, revoked members included; sessions counts live sessions on every instance.",
					flags: []flagDef{meshFlag},
					run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
						return admin.ListMembers(ctx, q, c.flag("mesh"))
					})},
				{name: "revoke", summary: `revoke a member → {"memberId","revoked":true}`,
					about: `Revoke a member and print {"memberId","revoked":true}: its open sockets are closed ` +
						"(4002 revoked, on every instance), its presences end, and its next hello is refused.",
					flags: []flagDef{
						meshFlag,
						{name: "member", value: "ID", meaning: "the member's id, as admin member add printed it", required: true},
					},
					run: adminPoolRun(func(ctx context.Context, pool *pgxpool.Pool, c *call) (any, error) {
						return admin.RevokeMember(ctx, pool, c.flag("mesh"), c.flag("member"), "")
					})},
			}},
		}, append(adminAccountCommands(), adminInviteCommands()...)...)}
}

// adminRun runs an admin function on the configured database and prints its result as JSON;
// its *admin.InputError is bad input (exit 2).
func adminRun(fn func(ctx context.Context, q *db.Queries, c *call) (any, error)) func(c *call) error {
	return adminPoolRun(func(ctx context.Context, pool *pgxpool.Pool, c *call) (any, error) {
		return fn(ctx, db.New(pool), c)
	})
}

// adminPoolRun is adminRun for functions that need the pool (their own transactions).
func adminPoolRun(fn func(ctx context.Context, pool *pgxpool.Pool, c *call) (any, error)) func(c *call) error {
	return func(c *call) error {
		return withPool(c.stderr, func(ctx context.Context, pool *pgxpool.Pool) error {
			res, err := fn(ctx, pool, c)
			var ie *admin.InputError
			if errors.As(err, &ie) {
				return inputError{ie.Msg}
			}
			if err != nil {
				return err
			}
			return json.NewEncoder(c.stdout).Encode(res)
		})
	}
}

// withPool opens the configured database for an operator command: the embedded cluster
// (attached to if a broker runs on it, else started and migrated) or DATABASE_URL, which
// must already be migrated.
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
