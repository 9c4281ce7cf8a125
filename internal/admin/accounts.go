package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/clitoken"
	"github.com/meshbroker/meshbroker/internal/ids"
)

// Bounds of account fields, as the HTTP API has them.
const (
	maxEmail = 320
	maxName  = 200
	maxLabel = 200
)

// User is one account in the output of CreateUser and ListUsers.
type User struct {
	UserID    string  `json:"userId"`
	Email     *string `json:"email"`
	Name      *string `json:"name"`
	CreatedAt string  `json:"createdAt"`
}

// CreateUser creates an account without the web app (a self-hosted broker has none); its
// bearers come from `admin token create`.
func CreateUser(ctx context.Context, q *db.Queries, email, name string) (User, error) {
	email, name = strings.TrimSpace(email), strings.TrimSpace(name)
	switch {
	case email == "":
		return User{}, inputErr("--email is required")
	case len(email) > maxEmail || !strings.Contains(email, "@"):
		return User{}, inputErr("--email must be an email address of at most %d characters", maxEmail)
	case len(name) > maxName:
		return User{}, inputErr("--name is longer than %d characters", maxName)
	}
	var namep *string
	if name != "" {
		namep = &name
	}
	u, err := q.InsertUser(ctx, db.InsertUserParams{ID: ids.New(), Email: &email, Name: namep})
	if isUniqueViolation(err, "users_email_key") {
		return User{}, inputErr("a user with email %q already exists", email)
	}
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	return User{UserID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: audit.FormatTime(u.CreatedAt)}, nil
}

// Users is the output of ListUsers.
type Users struct {
	Users []User `json:"users"`
}

// ListUsers lists every account, oldest first.
func ListUsers(ctx context.Context, q *db.Queries) (Users, error) {
	rows, err := q.ListUsers(ctx)
	if err != nil {
		return Users{}, fmt.Errorf("list users: %w", err)
	}
	out := Users{Users: make([]User, 0, len(rows))}
	for _, r := range rows {
		out.Users = append(out.Users, User{UserID: r.ID, Email: r.Email, Name: r.Name, CreatedAt: audit.FormatTime(r.CreatedAt)})
	}
	return out, nil
}

// TokenCreated is the result of CreateToken: the bearer is printed this once; only its
// SHA-256 is stored.
type TokenCreated struct {
	TokenID string  `json:"tokenId"`
	Token   string  `json:"token"`
	UserID  string  `json:"userId"`
	Label   *string `json:"label"`
}

// CreateToken mints a bearer for an existing user.
func CreateToken(ctx context.Context, q *db.Queries, userID, label string) (TokenCreated, error) {
	label = strings.TrimSpace(label)
	switch {
	case userID == "":
		return TokenCreated{}, inputErr("--user is required")
	case len(label) > maxLabel:
		return TokenCreated{}, inputErr("--label is longer than %d characters", maxLabel)
	}
	if err := requireUser(ctx, q, userID); err != nil {
		return TokenCreated{}, err
	}
	m, err := clitoken.Mint(ctx, q, clitoken.Params{UserID: userID, Label: label})
	if errors.Is(err, clitoken.ErrTooMany) {
		return TokenCreated{}, inputErr("user %q has %d unrevoked tokens, the most one user may: revoke one first", userID, clitoken.MaxLivePerUser)
	}
	if err != nil {
		return TokenCreated{}, err
	}
	out := TokenCreated{TokenID: m.ID, Token: m.Token, UserID: userID}
	if label != "" {
		out.Label = &label
	}
	return out, nil
}

func requireUser(ctx context.Context, q *db.Queries, userID string) error {
	ok, err := q.UserExists(ctx, userID)
	if err != nil {
		return fmt.Errorf("look up user: %w", err)
	}
	if !ok {
		return inputErr("no user with id %q", userID)
	}
	return nil
}

// Token is one bearer in ListTokens (never the bearer itself).
type Token struct {
	ID         string  `json:"id"`
	Label      *string `json:"label"`
	Hostname   *string `json:"hostname"`
	CreatedAt  string  `json:"createdAt"`
	LastSeenAt string  `json:"lastSeenAt"`
	Revoked    bool    `json:"revoked"`
}

// Tokens is the output of ListTokens.
type Tokens struct {
	Tokens []Token `json:"tokens"`
}

// ListTokens lists a user's bearers, revoked ones too, oldest first.
func ListTokens(ctx context.Context, q *db.Queries, userID string) (Tokens, error) {
	if userID == "" {
		return Tokens{}, inputErr("--user is required")
	}
	if err := requireUser(ctx, q, userID); err != nil {
		return Tokens{}, err
	}
	rows, err := q.ListUserCliSessions(ctx, userID)
	if err != nil {
		return Tokens{}, fmt.Errorf("list tokens: %w", err)
	}
	out := Tokens{Tokens: make([]Token, 0, len(rows))}
	for _, r := range rows {
		out.Tokens = append(out.Tokens, Token{ID: r.ID, Label: r.Label, Hostname: r.Hostname, CreatedAt: audit.FormatTime(r.CreatedAt),
			LastSeenAt: audit.FormatTime(r.LastSeenAt), Revoked: r.RevokedAt != nil})
	}
	return out, nil
}

// TokenRevoked is the result of RevokeToken.
type TokenRevoked struct {
	TokenID string `json:"tokenId"`
	Revoked bool   `json:"revoked"`
}

// RevokeToken revokes a bearer by its id: every instance refuses it from the next request
// (bearers are looked up in Postgres on each request).
func RevokeToken(ctx context.Context, q *db.Queries, tokenID string) (TokenRevoked, error) {
	if tokenID == "" {
		return TokenRevoked{}, inputErr("a token id is required")
	}
	id, err := q.RevokeCliSession(ctx, tokenID)
	if errors.Is(err, pgx.ErrNoRows) {
		return TokenRevoked{}, inputErr("no unrevoked token with id %q", tokenID)
	}
	if err != nil {
		return TokenRevoked{}, fmt.Errorf("revoke token: %w", err)
	}
	return TokenRevoked{TokenID: id, Revoked: true}, nil
}
