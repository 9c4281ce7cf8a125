package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
)

// errChainBroken makes `broker audit verify` exit 1 after printing its result.
type errChainBroken struct{ at int64 }

func (e errChainBroken) Error() string { return fmt.Sprintf("audit chain broken at row %d", e.at) }

// auditCommands: broker audit verify --mesh ID. Prints {"meshId","valid","entries",
// "brokenAt"?,"reason"?} and exits 0 when the chain is intact, 1 when it is broken or the
// mesh does not exist.
func auditCommands() *command {
	return &command{name: "audit", summary: "check the audit hash chains", subs: []*command{
		{name: "verify", summary: "verify a mesh's audit hash chain (exit 1 when broken)",
			about: `Chain the mesh's pending audit events (waiting up to 10 s for older transactions), ` +
				`verify its hash chain from genesis and print {"meshId","valid","entries"} — with "brokenAt" ` +
				`and "reason" when broken (exit 1). An archived mesh may be verified; an unknown one exits 1.`,
			flags: []flagDef{{name: "mesh", value: "ID", meaning: "the mesh's id", required: true}},
			run:   auditVerify},
	}}
}

func auditVerify(c *call) error {
	mesh := c.flag("mesh")
	return withPool(c.stderr, func(ctx context.Context, pool *pgxpool.Pool) error {
		q := db.New(pool)
		// Verifying a mesh that does not exist would report an empty, valid chain.
		if _, err := q.GetMesh(ctx, mesh); errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("mesh %s not found", mesh)
		} else if err != nil {
			return fmt.Errorf("look up mesh %s: %w", mesh, err)
		}
		if err := audit.ChainCaughtUp(ctx, pool, mesh, 10*time.Second); err != nil {
			return err
		}
		v, err := audit.VerifyMesh(ctx, q, mesh)
		if err != nil {
			return err
		}
		out := map[string]any{"meshId": mesh, "valid": v.Valid, "entries": v.Entries}
		if !v.Valid {
			out["brokenAt"], out["reason"] = v.BrokenAt, v.Reason
		}
		if err := json.NewEncoder(c.stdout).Encode(out); err != nil {
			return err
		}
		if !v.Valid {
			return errChainBroken{v.BrokenAt}
		}
		return nil
	})
}
