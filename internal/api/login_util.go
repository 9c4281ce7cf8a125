package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshbroker/meshbroker/db"
)

// Bounds of the account fields a caller sends (characters). Hostname, platform and arch are
// the device's; name and display_name a person's; 320 is the longest valid email address.
const (
	maxDeviceField = 200
	maxNameField   = 200
	maxEmailField  = 320
	maxUserIDField = 200
)

// tooLong is nil when v is within max characters and storable, else the 400 naming the
// field. Postgres text cannot hold NUL: refused here, it would otherwise fail the statement
// (a 500 for bad input).
func tooLong(field, v string, max int) error {
	if utf8.RuneCountInString(v) > max {
		return Fail(400, fmt.Sprintf("%s longer than %d characters", field, max))
	}
	if strings.ContainsRune(v, 0) {
		return Fail(400, field+" contains a NUL character")
	}
	return nil
}

// storable reports whether s can be a text parameter (no NUL).
func storable(s string) bool { return !strings.ContainsRune(s, 0) }

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// loginTx runs fn in one transaction, committed when fn returns nil and rolled back
// otherwise (fn's error is returned as is, so an *Error reaches the client unchanged).
func (a *API) loginTx(ctx context.Context, fn func(q *db.Queries) error) error {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if err := fn(a.q.WithTx(tx)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func loginNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

func loginUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
