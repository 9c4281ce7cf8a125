// Command broker is the meshbroker server and its operator tools.
//
//	broker [serve]                 run the broker (the default)
//	broker migrate up              apply pending migrations
//	broker migrate status          list migrations and whether each is applied
//	broker migrate down-to N       revert migrations down to version N (0 = empty)
//	broker admin mesh create …     provision meshes and members (see README.md)
//	broker audit verify --mesh ID  verify a mesh's audit chain (exit 1 when broken)
//	broker version                 print version, commit and Go version
//	broker [COMMAND] --help        the usage of broker or of any command (also -h, help)
//
// The commands, their flags and their usage are one table (commands, command).
// Configuration comes from the environment (see README.md). Without DATABASE_URL every
// command uses the embedded local Postgres in BROKER_DATA_DIR.
//
// Exit status: 0 on success, 1 on a runtime failure, 2 on bad usage or configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/meshbroker/meshbroker/internal/app"
	"github.com/meshbroker/meshbroker/internal/buildinfo"
	"github.com/meshbroker/meshbroker/internal/config"
	"github.com/meshbroker/meshbroker/internal/logging"
	"github.com/meshbroker/meshbroker/internal/migrate"
)

// commands is the command table (see command): usage, help and validation come from it.
func commands() *command {
	return &command{
		summary: "the meshbroker server and its operator tools",
		dflt:    "serve",
		subs: []*command{
			{name: "serve", summary: "run the broker",
				about: "Run the broker: serve HTTP and the WebSocket upgrade at /ws on BROKER_PORT until SIGINT " +
					"or SIGTERM, then drain. Configuration is read from the environment (see README.md); without " +
					"DATABASE_URL it starts (or reuses) a local Postgres cluster in BROKER_DATA_DIR and migrates it.",
				run: func(c *call) error { return serve(c.stderr) }},
			{name: "migrate", summary: "apply, list or revert the schema migrations (goose, under an advisory lock)",
				subs: []*command{
					{name: "up", summary: "apply pending migrations",
						run: func(c *call) error { return migrateRun(c, "up", 0) }},
					{name: "status", summary: "list migrations and whether each is applied",
						run: func(c *call) error { return migrateRun(c, "status", 0) }},
					{name: "down-to", summary: "revert migrations down to version N (0 = empty schema)",
						args: []argDef{{"N", "the goose version to keep (0 reverts every migration)"}},
						run: func(c *call) error {
							v, err := strconv.ParseInt(c.args[0], 10, 64)
							if err != nil || v < 0 {
								return c.usageErr("%q is not a version number (0 or more)", c.args[0])
							}
							return migrateRun(c, "down-to", v)
						}},
				}},
			adminCommands(),
			auditCommands(),
			{name: "version", aliases: []string{"--version", "-v"}, summary: "print version, commit and Go version",
				run: func(c *call) error {
					fmt.Fprintf(c.stdout, "broker %s (commit %s, %s)\n", buildinfo.Version, buildinfo.GitSHA(), runtime.Version())
					return nil
				}},
		},
	}
}

// inputError marks a well-formed command with bad values (exit status 2, no usage).
type inputError struct{ msg string }

func (e inputError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(commands(), args, stdout, stderr)
	var ue usageError
	var ie inputError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "broker: %s\n\n%s", ue.msg, ue.usage)
		return 2
	case errors.As(err, &ie):
		fmt.Fprintf(stderr, "broker: %s\n", ie.msg)
		return 2
	case errors.Is(err, errConfig):
		fmt.Fprintf(stderr, "broker: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "broker: %v\n", err)
		return 1
	}
}

var errConfig = errors.New("invalid configuration")

func loadConfig(stderr io.Writer) (config.Config, *slog.Logger, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return cfg, nil, fmt.Errorf("%w:\n%v", errConfig, err)
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated by config.Load
	return cfg, logging.New(stderr, level), nil
}

func serve(stderr io.Writer) error {
	cfg, log, err := loadConfig(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal now terminates at once, as usual
	}()
	if err := app.Serve(ctx, cfg, log, nil); err != nil {
		log.Error("broker stopped with an error", "err", err)
		return err
	}
	log.Info("broker stopped")
	return nil
}

// migrateRun runs `broker migrate up`, `status` or `down-to target`.
func migrateRun(c *call, sub string, target int64) error {
	stdout, stderr := c.stdout, c.stderr
	cfg, log, err := loadConfig(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dbase, closeDB, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeDB()
	m, err := migrate.Open(dbase.URL, log)
	if err != nil {
		return err
	}
	defer m.Close()

	switch sub {
	case "up":
		res, err := m.Up(ctx)
		for _, r := range res {
			fmt.Fprintf(stdout, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		if err != nil {
			return err
		}
		v, err := m.Version(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "schema at version %d (%d applied now)\n", v, len(res))
	case "down-to":
		res, err := m.DownTo(ctx, target)
		for _, r := range res {
			fmt.Fprintf(stdout, "reverted %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "schema at version %d (%d reverted now)\n", target, len(res))
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-8s %-8s %-25s %s\n", "VERSION", "STATE", "APPLIED AT", "FILE")
		for _, s := range st {
			at := "-"
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "%-8d %-8s %-25s %s\n", s.Source.Version, s.State, at, s.Source.Path)
		}
	}
	return nil
}
