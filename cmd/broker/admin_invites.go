package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/invitestore"
)

// adminInviteCommands are `broker admin invite …`.
func adminInviteCommands() []*command {
	return []*command{{name: "invite", summary: "provision invites", subs: []*command{
		{name: "create", summary: `create an invite → {"inviteId","token","code","url","link",…}`,
			about: `Create an invite to a mesh that is not archived, signed with the mesh's owner key, and print ` +
				`{"inviteId","token","code","url","link","expiresAt","maxUses","role"}: the token (or the ic://join/ ` +
				`link) is what claudemesh join takes; url is the web app's short link <APP_URL>/i/<code>; the token ` +
				`carries BROKER_URL. The token holds the mesh root key: hand it only to the person invited.`,
			flags: []flagDef{
				{name: "mesh", value: "ID", meaning: "the mesh's id, as admin mesh create printed it", required: true},
				{name: "role", value: "member|admin", meaning: "the role of the members it admits", def: "member"},
				{name: "max-uses", value: "N", meaning: "how many joins it admits, 1 to 1000000", def: "1"},
				{name: "expires-in", value: "D", meaning: "its lifetime: days (7d) or a Go duration (36h), at most 365d", def: "7d"},
			},
			run: adminInviteCreate},
		{name: "list", summary: `list a mesh's invites → {"invites":[…]}`,
			about: `Print {"invites":[{inviteId, code, role, maxUses, usedCount, expiresAt, createdAt, revokedAt, createdBy}]}, ` +
				"newest first, at most 1000 — never the tokens (a token holds the mesh root key).",
			flags: []flagDef{{name: "mesh", value: "ID", meaning: "the mesh's id", required: true}},
			run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
				list, err := invitestore.List(ctx, q, c.flag("mesh"))
				if err != nil {
					return nil, err
				}
				return map[string]any{"invites": list}, nil
			})},
		{name: "revoke", summary: `revoke an invite → {"inviteId","revoked":true}`,
			about: "Revoke an invite (by its id or its code): joins and claims with it are refused from now on; " +
				"the members it admitted stay. Recorded as invite_revoked in the mesh's audit chain.",
			flags: []flagDef{{name: "mesh", value: "ID", meaning: "the mesh's id", required: true}},
			args:  []argDef{{"INVITE", "the invite's id or code"}},
			run: adminPoolRun(func(ctx context.Context, pool *pgxpool.Pool, c *call) (any, error) {
				id, err := invitestore.Revoke(ctx, pool, c.flag("mesh"), c.args[0], "")
				if errors.Is(err, invitestore.ErrNoInvite) {
					return nil, &admin.InputError{Msg: fmt.Sprintf("mesh %q has no unrevoked invite %q", c.flag("mesh"), c.args[0])}
				}
				if err != nil {
					return nil, err
				}
				return map[string]any{"inviteId": id, "revoked": true}, nil
			})},
	}}}
}

// inviteCreated is what `admin invite create` prints.
type inviteCreated struct {
	InviteID  string `json:"inviteId"`
	Token     string `json:"token"`
	Code      string `json:"code"`
	URL       string `json:"url"`
	Link      string `json:"link"`
	ExpiresAt string `json:"expiresAt"`
	MaxUses   int    `json:"maxUses"`
	Role      string `json:"role"`
}

func adminInviteCreate(c *call) error {
	role := c.flag("role")
	if role != "member" && role != "admin" {
		return inputError{fmt.Sprintf("--role must be member or admin, not %q", role)}
	}
	maxUses, err := strconv.Atoi(c.flag("max-uses"))
	if err != nil || maxUses < 1 || maxUses > invitestore.MaxMaxUses {
		return inputError{fmt.Sprintf("--max-uses must be a whole number from 1 to %d, not %q", invitestore.MaxMaxUses, c.flag("max-uses"))}
	}
	expiresIn, err := parseLifetime(c.flag("expires-in"))
	if err != nil {
		return inputError{"--expires-in: " + err.Error()}
	}
	cfg, _, err := loadConfig(c.stderr)
	if err != nil {
		return err
	}
	return withPool(c.stderr, func(ctx context.Context, pool *pgxpool.Pool) error {
		meshID := c.flag("mesh")
		mesh, err := db.New(pool).GetMesh(ctx, meshID)
		if errors.Is(err, pgx.ErrNoRows) {
			return inputError{fmt.Sprintf("no mesh with id %q", meshID)}
		}
		if err != nil {
			return fmt.Errorf("look up mesh: %w", err)
		}
		if mesh.ArchivedAt != nil {
			return inputError{fmt.Sprintf("mesh %q is archived", meshID)}
		}
		inv, err := invitestore.Create(ctx, pool, invitestore.Params{Mesh: mesh, Role: role, MaxUses: maxUses,
			ExpiresIn: expiresIn, BrokerURL: cfg.BrokerURL, AppURL: cfg.AppURL})
		if err != nil {
			return err
		}
		return json.NewEncoder(c.stdout).Encode(inviteCreated{InviteID: inv.ID, Token: inv.Token, Code: inv.Code,
			URL: inv.URL, Link: inv.Link, ExpiresAt: audit.FormatTime(inv.ExpiresAt),
			MaxUses: inv.MaxUses, Role: inv.Role})
	})
}

// parseLifetime reads an invite lifetime: whole days written Nd (7d), or a Go duration
// (36h, 90m); positive and at most invitestore.MaxExpiresIn.
func parseLifetime(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days > int(invitestore.MaxExpiresIn/(24*time.Hour)) {
			return 0, fmt.Errorf("%q is not a number of days (like 7d) up to 365d", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is neither days (7d) nor a duration (36h)", s)
		}
	}
	if d <= 0 || d > invitestore.MaxExpiresIn {
		return 0, fmt.Errorf("%q is not between 1s and 365d", s)
	}
	return d, nil
}
