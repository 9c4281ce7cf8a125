package main

import (
	"context"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
)

// adminAccountCommands are `broker admin user …` and `broker admin token …`: accounts and
// their CLI bearers without the web app.
func adminAccountCommands() []*command {
	userFlag := flagDef{name: "user", value: "ID", meaning: "the user's id, as admin user create printed it", required: true}
	return []*command{
		{name: "user", summary: "provision accounts", subs: []*command{
			{name: "create", summary: `create a user → {"userId","email","name"}`,
				about: `Create an account and print {"userId","email","name","createdAt"}. Emails are unique ` +
					"(case-insensitive). Give it bearer tokens with admin token create.",
				flags: []flagDef{
					{name: "email", value: "EMAIL", meaning: "the user's email address", required: true},
					{name: "name", value: "NAME", meaning: "the user's name, up to 200 characters"},
				},
				run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
					return admin.CreateUser(ctx, q, c.flag("email"), c.flag("name"))
				})},
			{name: "list", summary: `list every user → {"users":[…]}`,
				about: `Print every account, oldest first, as {"users":[{"userId","email","name","createdAt"}]}.`,
				run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
					return admin.ListUsers(ctx, q)
				})},
		}},
		{name: "token", summary: "provision CLI bearer tokens", subs: []*command{
			{name: "create", summary: `mint a bearer for a user → {"tokenId","token","userId","label"}`,
				about: `Mint a CLI bearer token for a user and print {"tokenId","token","userId","label"}. The token ` +
					"is shown this once: only its SHA-256 is stored. Revoke it with admin token revoke.",
				flags: []flagDef{
					userFlag,
					{name: "label", value: "LABEL", meaning: "what the token is for, shown by token list and GET /cli/sessions"},
				},
				run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
					return admin.CreateToken(ctx, q, c.flag("user"), c.flag("label"))
				})},
			{name: "list", summary: `list a user's tokens → {"tokens":[…]}`,
				about: `Print a user's bearer tokens, revoked ones too, oldest first, as ` +
					`{"tokens":[{"id","label","hostname","createdAt","lastSeenAt","revoked"}]} (never the tokens themselves).`,
				flags: []flagDef{userFlag},
				run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
					return admin.ListTokens(ctx, q, c.flag("user"))
				})},
			{name: "revoke", summary: `revoke a token → {"tokenId","revoked":true}`,
				about: `Revoke a bearer token by its id and print {"tokenId","revoked":true}. Every instance refuses ` +
					"it from its next request.",
				args: []argDef{{name: "ID", meaning: "the token's id, as token create or token list printed it"}},
				run: adminRun(func(ctx context.Context, q *db.Queries, c *call) (any, error) {
					return admin.RevokeToken(ctx, q, c.args[0])
				})},
		}},
	}
}
