package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
)

// errChainBroken makes `broker audit verify` exit 1 after printing its result.
type errChainBroken struct{ at int64 }

func (e errChainBroken) Error() string { return fmt.Sprintf("audit chain broken at row %d", e.at) }

// auditCmd: broker audit verify --mesh ID. Prints {"valid","entries","brokenAt"?,"reason"?}
// and exits 0 when the chain is intact, 1 when it is broken.
func auditCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError{"audit needs a subcommand: verify --mesh MESH_ID"}
	}
	fs := flag.NewFlagSet("broker audit verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	mesh := fs.String("mesh", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{fmt.Sprintf("audit verify: %v", err)}
	}
	if *mesh == "" || fs.NArg() > 0 {
		return usageError{"audit verify needs --mesh MESH_ID and nothing else"}
	}
	return withPool(stderr, func(ctx context.Context, pool *pgxpool.Pool) error {
		q := db.New(pool)
		if err := audit.ChainCaughtUp(ctx, pool, *mesh, 10*time.Second); err != nil {
			return err
		}
		v, err := audit.VerifyMesh(ctx, q, *mesh)
		if err != nil {
			return err
		}
		out := map[string]any{"meshId": *mesh, "valid": v.Valid, "entries": v.Entries}
		if !v.Valid {
			out["brokenAt"], out["reason"] = v.BrokenAt, v.Reason
		}
		if err := json.NewEncoder(stdout).Encode(out); err != nil {
			return err
		}
		if !v.Valid {
			return errChainBroken{v.BrokenAt}
		}
		return nil
	})
}
